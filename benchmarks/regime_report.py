"""Issue 28's regime report: how each arm's test and held-out accuracy moves with the epochs, and
whether any graph arm clears the bar for a named recipe against the plain encoder.

Reads the study's runs whose arm ends in `+e<N>` (N epochs, evaluated every epoch: result.json
holds `curves` for the test split and the held-out training queries) and writes a Markdown report
with one plot per dataset: per arm and length, the final and the best held-out epoch (mean ± sd
over seeds), and the curves; each arm against plain at the same length, paired by seed, with the
issue's bar checked; NGAME batches against random batches of the same arm; the untrained
encoder's floor where `<dataset>/zeroshot.json` is recorded. Recipes are compared on the held-out
queries; test figures are shown beside them, never used to choose.

    python benchmarks/regime_report.py [--runs benchmarks/results/accuracy-runs] [--out benchmarks/results/regime.md]
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy_report import _save, _slug, _table, load_results, mean_std, plus_minus  # noqa: E402

LENGTH = re.compile(r"^(?P<base>.+)\+e(?P<epochs>\d+)$")
METRICS = ("P@1", "PSP@1")
PLAIN = "plain+bf16"  # the plain encoder's base arm: every graph arm is compared with it at its length
NGAME = re.compile(r"\+ngame(10|30|60)(?=\+|$)")  # the levers that swap random batches for NGAME cluster batches
NGAME_BUDGET = "+ngame10"  # the same at the study's 10-epoch budget, beside that budget's float32 arms
BUDGET_EPOCHS = 10
HELD_OUT_TWIN = "+e10"  # that budget's random-batch arms rerun evaluated every epoch, held-out queries included
BAR = 0.01  # issue 28: a named recipe beats plain by >= 1 point of held-out P@1 and PSP@1 ...
BAR_SEEDS = 3  # ... beyond one sd of the paired differences, over at least this many seeds
BOOTSTRAP = 5000  # resamples of the queries for the 95% interval of a difference (seeded)


def length_runs(results: list[dict[str, Any]]) -> dict[str, dict[str, dict[int, list[dict[str, Any]]]]]:
    """dataset -> base arm (the arm without +e<N>) -> epochs -> results with per-epoch curves."""
    out: dict[str, dict[str, dict[int, list[dict[str, Any]]]]] = {}
    for r in results:
        m = LENGTH.match(r["arm"])
        if m and r.get("curves", {}).get("heldout"):
            out.setdefault(r["dataset"], {}).setdefault(m["base"], {}).setdefault(int(m["epochs"]), []).append(r)
    return out


def best_heldout_epoch(r: dict[str, Any], metric: str = "P@1") -> dict[str, Any]:
    """The epoch whose held-out `metric` is highest (the first on ties), with both splits' metrics."""
    held = r["curves"]["heldout"]
    i = int(np.argmax([e[metric] for e in held]))
    return {"epoch": held[i]["epoch"], "heldout": held[i], "test": r["curves"]["test"][i]}


def final(r: dict[str, Any], split: str) -> dict[str, float]:
    """A run's metrics after its last epoch on `split` ("heldout" or "test")."""
    return r["curves"]["heldout"][-1] if split == "heldout" else r["metrics"]


def paired_deltas(runs: list[dict[str, Any]], controls: list[dict[str, Any]], split: str,
                  metric: str) -> list[float]:
    """`metric` of each run minus its control's of the same seed (seeds missing on either side skipped)."""
    base = {r["seed"]: final(r, split)[metric] for r in controls}
    return [final(r, split)[metric] - base[r["seed"]] for r in runs if r["seed"] in base]


def query_interval(runs: list[dict[str, Any]], controls: list[dict[str, Any]], split: str,
                   per_query: dict[tuple[str, str, int], dict[str, Any]]) -> dict[str, tuple[float, float]] | None:
    """95% intervals of the P@1 and PSP@1 differences (run minus control, averaged over the seeds both
    have per-query terms for) from a seeded bootstrap over `split`'s queries: the sampling noise of the
    queries, which the sd over seeds does not see. None without per-query terms on both sides."""
    seeds = [r["seed"] for r in runs if (r["dataset"], r["arm"], r["seed"]) in per_query
             and any((c["dataset"], c["arm"], r["seed"]) in per_query for c in controls)]
    if not seeds:
        return None
    control_arm = controls[0]["arm"]
    hit, gain = [], []
    for r in runs:
        if r["seed"] in seeds:
            a, c = per_query[(r["dataset"], r["arm"], r["seed"])][split], per_query[(r["dataset"], control_arm, r["seed"])][split]
            hit.append(np.subtract(a["hit"], c["hit"], dtype=np.float64))
            gain.append(np.subtract(a["gain"], c["gain"], dtype=np.float64))
            best = np.asarray(a["best"], dtype=np.float64)
    d_hit, d_gain = np.mean(hit, axis=0), np.mean(gain, axis=0)
    idx = np.random.default_rng(0).integers(0, len(d_hit), size=(BOOTSTRAP, len(d_hit)))
    p1 = d_hit[idx].mean(axis=1)
    psp1 = d_gain[idx].sum(axis=1) / np.maximum(best[idx].sum(axis=1), 1e-300)
    return {m: tuple(float(x) for x in np.percentile(v, [2.5, 97.5])) for m, v in (("P@1", p1), ("PSP@1", psp1))}


def _interval_cell(interval: tuple[float, float] | None) -> str:
    return "-" if interval is None else f"[{100 * interval[0]:+.2f}, {100 * interval[1]:+.2f}]"


def bar_verdict(delta_p1: list[float], delta_psp1: list[float]) -> str:
    """Whether held-out P@1 and PSP@1 both beat the control by >= 1 point and by more than one sample
    sd of the paired differences (issue 28's bar for a named recipe), or why it cannot be said yet."""
    n = min(len(delta_p1), len(delta_psp1))
    if n < BAR_SEEDS:
        return f"open ({n} of {BAR_SEEDS} seeds)"
    ok = True
    for deltas in (delta_p1, delta_psp1):
        mean, std, _ = mean_std(deltas)
        ok &= mean >= BAR - 1e-9 and mean > std  # metrics are k/n: exactly a point may round below 0.01
    return "**yes**" if ok else "no"


def _delta_cell(deltas: list[float]) -> str:
    mean, std, n = mean_std(deltas)
    return "-" if n == 0 else ("+" if mean > 0 else "") + plus_minus(mean, std)


def _delta_table(arms: dict[str, dict[int, list[dict[str, Any]]]], pairs: list[tuple[str, str, int]], bar: bool,
                 per_query: dict[tuple[str, str, int], dict[str, Any]]) -> list[str]:
    """One row per (arm, control, epochs): paired differences on both splits, the held-out queries'
    bootstrap intervals where per-query terms are recorded, and the bar if asked."""
    header = ["arm", "control", "epochs", "paired seeds", *(f"Δ held-out {m}" for m in METRICS),
              *(f"held-out {m}: 95% interval over queries" for m in METRICS),
              *(f"Δ test {m}" for m in METRICS), *(["named-recipe bar (held-out)"] if bar else [])]
    rows = []
    for base, control, epochs in pairs:
        runs, controls = arms[base][epochs], arms[control][epochs]
        held = [paired_deltas(runs, controls, "heldout", m) for m in METRICS]
        test = [paired_deltas(runs, controls, "test", m) for m in METRICS]
        interval = query_interval(runs, controls, "heldout", per_query)
        cells = [_interval_cell(interval and interval[m]) for m in METRICS]
        verdict = bar_verdict(*held)
        if verdict == "**yes**" and interval is not None and min(interval[m][0] for m in METRICS) <= 0:
            verdict += " (but a query interval reaches 0)"
        rows.append([base, control, str(epochs), str(len(held[0])), *map(_delta_cell, held), *cells,
                     *map(_delta_cell, test), *([verdict] if bar else [])])
    return _table(header, rows)


def against_plain(arms: dict[str, dict[int, list[dict[str, Any]]]]) -> list[tuple[str, str, int]]:
    """(arm, plain, epochs) for every non-plain arm at a length plain also ran."""
    plain = arms.get(PLAIN, {})
    return [(base, PLAIN, epochs) for base, lengths in arms.items() if base != PLAIN
            for epochs in sorted(lengths) if epochs in plain]


def ngame_versus_random(arms: dict[str, dict[int, list[dict[str, Any]]]]) -> list[tuple[str, str, int]]:
    """(arm with NGAME batches, the same arm with random batches, epochs) where both ran."""
    return [(base, NGAME.sub("", base), epochs) for base, lengths in arms.items() if NGAME.search(base)
            for epochs in sorted(lengths) if epochs in arms.get(NGAME.sub("", base), {})]


def graph_over_ngame(arms: dict[str, dict[int, list[dict[str, Any]]]]) -> list[tuple[str, str, int]]:
    """(graph arm with NGAME batches, plain with the same NGAME batches, epochs) where both ran: the
    paper's RAMEN-NGAME against NGAME batches alone, the graph's own share where batches are hard."""
    pairs = []
    for base, lengths in arms.items():
        m = NGAME.search(base)
        if m is None or base.startswith("plain+"):
            continue
        control = "plain" + base[m.start():]  # the same NGAME lever and the levers after it (bf16)
        pairs += [(base, control, epochs) for epochs in sorted(lengths) if epochs in arms.get(control, {})]
    return pairs


def budget_ngame_table(results: list[dict[str, Any]], dataset: str) -> list[str]:
    """NGAME batches at the study's 10-epoch budget against the same arm with random batches and against
    plain, paired by seed on the test split (those arms record no held-out curves): one row per arm."""
    arms: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        if r["dataset"] == dataset:
            arms.setdefault(r["arm"], []).append(r)
    rows = []
    for arm, runs in arms.items():
        control = arm.replace(NGAME_BUDGET, "")
        if NGAME_BUDGET not in arm or LENGTH.match(arm) or control not in arms:  # +e<N> arms: the length tables
            continue
        cells = [arm, str(len(runs))]
        for base in (control, "plain"):
            deltas = [paired_deltas(runs, arms.get(base, []), "test", m) for m in METRICS]
            cells += [str(len(deltas[0])), *map(_delta_cell, deltas)]
        twin = arms.get(control + HELD_OUT_TWIN, [])  # the random-batch arm rerun with held-out curves
        held = [paired_deltas(runs, twin, "heldout", m) for m in METRICS] if twin else [[] for _ in METRICS]
        cells += [str(len(held[0])), *map(_delta_cell, held)]
        rows.append(cells)
    if not rows:
        return []
    header = ["arm", "seeds", "paired with random batches", *(f"Δ test {m} vs random batches" for m in METRICS),
              "paired with plain", *(f"Δ test {m} vs plain" for m in METRICS),
              f"paired with `<arm>{HELD_OUT_TWIN}`", *(f"Δ held-out {m} vs random batches" for m in METRICS)]
    return ["NGAME cluster batches at the study's budget (10 epochs, float32), paired by seed: on the test "
            f"split against the study's random-batch arms, and on held-out queries against their reruns "
            f"with held-out curves (`<arm>{HELD_OUT_TWIN}`: the same settings, evaluated every epoch):", "", *_table(header, rows), ""]


def budget_graph_over_ngame(results: list[dict[str, Any]], dataset: str,
                            per_query: dict[tuple[str, str, int], dict[str, Any]]) -> list[str]:
    """The graph on top of NGAME batches at the study's budget: each graph arm with `+ngame10` against
    plain with the same batches, paired by seed on held-out queries (the bar) and on test beside."""
    arms: dict[str, dict[int, list[dict[str, Any]]]] = {}
    for r in results:
        if r["dataset"] == dataset and NGAME_BUDGET in r["arm"] and not LENGTH.match(r["arm"]) \
                and r.get("curves", {}).get("heldout"):
            arms.setdefault(r["arm"], {}).setdefault(BUDGET_EPOCHS, []).append(r)
    pairs = graph_over_ngame(arms)
    if not pairs:
        return []
    return ["The graph on top of NGAME batches at that budget (the paper's RAMEN-NGAME against NGAME batches "
            "alone), paired by seed (the bar: the same, against this stronger control):", "",
            *_delta_table(arms, pairs, True, per_query), ""]


def zero_shot_line(path: Path) -> list[str]:
    """The untrained encoder's held-out and test P@1 / PSP@1 (the floor of every arm), if recorded."""
    if not path.exists():
        return []
    z = json.loads(path.read_text())
    cells = ", ".join(f"{split} P@1 {100 * z[key]['metrics']['P@1']:.2f} / PSP@1 {100 * z[key]['metrics']['PSP@1']:.2f}"
                      for split, key in (("held-out", "heldout"), ("test", "test")))
    return [f"The untrained encoder (zero-shot floor, `{path.parent.name}/{path.name}`): {cells}.", ""]


def _cell(values: list[float]) -> str:
    mean, std, n = mean_std(values)
    return f"{plus_minus(mean, std)} (n={n})"


def _length_table(arms: dict[str, dict[int, list[dict[str, Any]]]]) -> list[str]:
    header = ["arm", "epochs", *(f"held-out {m} (last)" for m in METRICS), *(f"test {m} (last)" for m in METRICS),
              "best held-out epoch", "held-out P@1 there", "test P@1 there"]
    rows = []
    for base, lengths in arms.items():
        for epochs, rs in sorted(lengths.items()):
            best = [best_heldout_epoch(r) for r in rs]
            rows.append([base, str(epochs),
                         *(_cell([r["curves"]["heldout"][-1][m] for r in rs]) for m in METRICS),
                         *(_cell([r["metrics"][m] for r in rs]) for m in METRICS),
                         ", ".join(str(b["epoch"]) for b in best),
                         _cell([b["heldout"]["P@1"] for b in best]), _cell([b["test"]["P@1"] for b in best])])
    return _table(header, rows)


def _plot(dataset: str, arms: dict[str, dict[int, list[dict[str, Any]]]], out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 9), sharex=True)
    colors = dict(zip(arms, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4))
    for base, lengths in arms.items():
        for epochs, rs in sorted(lengths.items()):
            style = {10: ":", 30: "--"}.get(epochs, "-")
            for row, metric in zip(axes, METRICS):
                for ax, split in zip(row, ("heldout", "test")):
                    curve = np.mean([[e[metric] for e in r["curves"][split]] for r in rs], axis=0) * 100
                    ax.plot(np.arange(1, len(curve) + 1), curve, style, color=colors[base],
                            label=f"{base}, {epochs} ep (n={len(rs)})")
    for row, metric in zip(axes, METRICS):
        for ax, split in zip(row, ("held-out training queries", "test queries")):
            ax.set_title(f"{dataset}: {split}, {metric}")
            ax.set_xlabel("epoch")
            ax.set_ylabel(f"{metric} (%)")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    return _save(fig, out_dir / f"regime_{_slug(dataset)}_curves.png")


def load_per_query(runs: Path) -> dict[tuple[str, str, int], dict[str, Any]]:
    """(dataset, arm, seed) -> the per-query terms the study's `perquery` command recorded."""
    out = {}
    for path in runs.glob("*/*/seed*/perquery.json"):
        q = json.loads(path.read_text())
        out[(q["dataset"], q["arm"], q["seed"])] = q
    return out


def write(runs: Path, out: Path) -> None:
    results, _ = load_results(runs)
    per_query = load_per_query(runs)
    grouped = length_runs(results)
    lines = ["# Training length and NGAME batches: accuracy per epoch (issue 28)", "",
             f"Generated by `python benchmarks/regime_report.py --runs {runs} --out {out}` from the study's runs "
             "whose arm ends in `+e<N>` (N epochs, evaluated every epoch on the test split and on the 10% of "
             "training queries held out). Figures are mean ± sample sd over the seeds run so far (n); "
             "recipes are compared on the held-out queries, the test split is shown beside them.", "",
             f"Differences are in points, each run minus its control of the same seed, after the last epoch: "
             f"mean ± sample sd of those differences. The bar for a named recipe (issue 28): held-out P@1 and "
             f"PSP@1 both ahead of plain by at least {100 * BAR:g} point and by more than one sd, over at least "
             f"{BAR_SEEDS} seeds. That sd is the seeds' noise alone, over one fixed set of held-out queries; the "
             f"interval beside it is the queries' noise: a seeded bootstrap ({BOOTSTRAP} resamples) of the "
             f"held-out queries, each query's difference averaged over the seeds with per-query terms "
             f"(`benchmarks/accuracy.py perquery`, recorded as perquery.json); '-' where none are recorded.", "",
             "Issue 28's axes: training length (10, 30 and 60 epochs) and NGAME batches (`+ngame10`, `+ngame30`, "
             "`+ngame60`) in the Wikispeedia section; FOLDOC, the second real dataset, at 30 epochs in its own section; NGAME "
             "batches on the synthetic benchmark at the study's 10-epoch budget (`+ngame10`) in its section.", ""]
    budget_only = sorted({r["dataset"] for r in results if NGAME_BUDGET in r["arm"]} - set(grouped))
    for dataset in budget_only:
        lines += [f"## {dataset}", "", *budget_ngame_table(results, dataset),
                  *budget_graph_over_ngame(results, dataset, per_query)]
    for dataset, arms in grouped.items():
        plot = _plot(dataset, arms, out.parent)
        lines += [f"## {dataset}", "", *zero_shot_line(runs / dataset / "zeroshot.json"), *_length_table(arms), "",
                  *budget_ngame_table(results, dataset), *budget_graph_over_ngame(results, dataset, per_query)]
        if pairs := against_plain(arms):
            lines += [f"Against the plain encoder (`{PLAIN}`) at the same length, paired by seed:", "",
                      *_delta_table(arms, pairs, True, per_query), ""]
        if pairs := ngame_versus_random(arms):
            lines += ["NGAME cluster batches against random batches of the same arm, paired by seed:", "",
                      *_delta_table(arms, pairs, False, per_query), ""]
        if pairs := graph_over_ngame(arms):
            lines += ["The graph on top of NGAME batches (the paper's RAMEN-NGAME) against plain with the same "
                      "NGAME batches, paired by seed (the bar: the same, against this stronger control):", "",
                      *_delta_table(arms, pairs, True, per_query), ""]
        lines += [f"![curves]({plot.name})", ""]
    if not grouped and not budget_only:
        lines += ["No run with per-epoch curves yet.", ""]
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("benchmarks/results/accuracy-runs"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/regime.md"))
    args = parser.parse_args()
    write(args.runs, args.out)


if __name__ == "__main__":
    main()
