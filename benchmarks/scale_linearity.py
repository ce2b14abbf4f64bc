"""How each stage of the `scale` suite grows with the data (issue 26: no stage may grow faster than
linearly). Reads the suite's JSON at several sizes (fractions of the paper's shape) and prints, per
stage, its wall time at each size and the growth exponent between the smallest and the largest:
log(t_large / t_small) / log(size_large / size_small). 1 is linear; the exact evaluation of Q
queries against L labels is Q x L work, 2 (its cost is stated in scale.md); a per-batch cost is 0.

    for s in 0.05 0.1 0.2 0.4; do python -m ramen.bench --suite scale --size $s --json scale-$s.json; done
    python benchmarks/scale_linearity.py scale-0.05.json scale-0.1.json scale-0.2.json scale-0.4.json
"""
from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path


def stage_name(case: str) -> str:
    """The case without its counts ("evaluate 17,752 test queries" -> "evaluate N test queries")."""
    return re.sub(r"\d[\d,]*", "N", case)


def load(path: Path) -> tuple[float, dict[str, dict]]:
    rows = json.loads(path.read_text())["rows"]
    size = next(float(r["settings"]["size"]) for r in rows if r["case"] == "whole suite")
    return size, {stage_name(r["case"]): r for r in rows if r["case"] != "whole suite"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", nargs="+", type=Path, help="the scale suite's --json at two sizes or more")
    args = parser.parse_args()
    runs = sorted(load(p) for p in args.json)
    if len(runs) < 2 or runs[0][0] == runs[-1][0]:
        raise SystemExit("give the suite's JSON at two different sizes or more")
    sizes = [s for s, _ in runs]
    (small, first), (large, last) = runs[0], runs[-1]
    print("| stage | " + " | ".join(f"{s:g}: wall s" for s in sizes) + " | growth exponent (time) | rise GB at "
          f"{small:g} / {large:g} |")
    print("|---|" + "---|" * len(sizes) + "---|---|")
    for name, row in first.items():
        if name not in last:
            continue
        walls = [r.get(name, {}).get("settings", {}).get("wall_s") for _, r in runs]
        if row["unit"] == "ms/batch":  # CPU time a batch: the per-batch cost itself
            walls = [r.get(name, {}).get("ours") for _, r in runs]
        t0, t1 = walls[0], walls[-1]
        exponent = (math.log(t1 / t0) / math.log(large / small)) if t0 and t1 and t0 > 0 and t1 > 0 else float("nan")
        rise = (row["settings"].get("rss_rise_GB"), last[name]["settings"].get("rss_rise_GB"))
        cells = " | ".join("-" if w is None else f"{w:.3g}" for w in walls)
        unit = " (ms a batch)" if row["unit"] == "ms/batch" else ""
        print(f"| {name}{unit} | {cells} | {exponent:.2f} | {rise[0]} / {rise[1]} |")


if __name__ == "__main__":
    main()
