"""`python -m ramen.bench`: run throughput suites and print ours beside the peers."""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

from ramen.bench.common import Row, format_rows, machine_info

# suite name -> module with `run(quick: bool) -> list[Row]`
SUITES: dict[str, str] = {
    "data": "ramen.bench.data",
    "search": "ramen.bench.search",
    "encode": "ramen.bench.encode",
    "train": "ramen.bench.train",
    "triplet": "ramen.bench.triplet",
    "graph": "ramen.bench.graph",
    "accuracy": "ramen.bench.accuracy",
    "gpu": "ramen.bench.gpu",
    "scale": "ramen.bench.scale",
}
# what runs without --suite: the throughput suites (the accuracy study takes hours unless --quick;
# the GPU acceptance check is its own command, `--suite gpu`; the paper-scale run, `--suite scale`,
# takes tens of minutes and several GB unless --quick)
DEFAULT_SUITES = [name for name in SUITES if name not in ("accuracy", "gpu", "scale")]
LEFT_OUT = [name for name in SUITES if name not in DEFAULT_SUITES]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ramen.bench", description=__doc__)
    parser.add_argument("--suite", action="append", choices=sorted(SUITES) or None,
                        help=f"suite to run (repeatable; default: every suite but {', '.join(LEFT_OUT[:-1])} and "
                        f"{LEFT_OUT[-1]}; --quick without --suite runs all {len(SUITES)}, those too)")
    parser.add_argument("--quick", action="store_true", help="small sizes (scale: small); without --suite, every "
                        "suite in about 3 minutes on 2 cores (benchmarks/results/bench-quick.json)")
    parser.add_argument("--size", help="data size of the scale suite (only with it selected): a synthetic preset "
                        "(paper, medium, small, tiny) or a fraction of paper such as 0.25 (default: paper; small "
                        "with --quick)")
    parser.add_argument("--json", type=Path, help="also write the machine and rows to this JSON file")
    args = parser.parse_args(argv)

    suites = args.suite or (sorted(SUITES) if args.quick else DEFAULT_SUITES)
    try:  # bad arguments stop here, not after the suites have run
        if args.size is not None:
            from ramen.bench.scale import dataset_config

            dataset_config(args.size)
            if "scale" not in suites:
                raise ValueError(f"--size {args.size}: sets the scale suite's data size, but the scale suite is not "
                                 "selected (add --suite scale)")
        if args.json is not None:
            _check_json_path(args.json)
    except ValueError as exc:
        parser.error(str(exc))
    machine = machine_info()
    print("machine: " + ", ".join(f"{k}={v}" for k, v in machine.items()), flush=True)
    rows: list[Row] = []
    for name in suites:
        t0 = time.perf_counter()
        print(f"\n== suite {name}{' (quick)' if args.quick else ''} ==", flush=True)
        extra = {"size": args.size} if name == "scale" and args.size else {}
        suite_rows = importlib.import_module(SUITES[name]).run(quick=args.quick, **extra)
        print(format_rows(suite_rows))
        for r in suite_rows:
            if r.settings:
                print(f"  {r.case}: " + ", ".join(f"{k}={v}" for k, v in r.settings.items()))
        print(f"(suite {name}: {time.perf_counter() - t0:.1f} s)", flush=True)
        rows += suite_rows
    if args.json:
        tmp = _json_tmp(args.json)
        tmp.write_text(json.dumps({"machine": machine, "quick": args.quick,
                                   "rows": [r.as_dict() for r in rows]}, indent=1))
        tmp.replace(args.json)
    return 0


def _json_tmp(path: Path) -> Path:
    """The temporary file the JSON report is written to, then renamed onto `path`."""
    return path.with_suffix(path.suffix + ".tmp")


def _check_json_path(path: Path) -> None:
    """Makes `path`'s folders and creates and removes its temporary file: a --json that cannot be
    written is a ValueError before the suites run (hours for a full run), not after."""
    if path.is_dir() or (path.parent.exists() and not path.parent.is_dir()):
        raise ValueError(f"--json {path}: not a file path")
    tmp = _json_tmp(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.open("w").close()
        tmp.unlink()
    except OSError as exc:
        raise ValueError(f"--json {path}: cannot write {tmp} ({exc.strerror or exc})") from None


if __name__ == "__main__":
    sys.exit(main())
