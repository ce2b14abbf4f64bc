"""The accuracy study's report: tables and plots from the result files of `benchmarks/accuracy.py`.

Reads RUNS/<dataset>/<arm>/seed<k>/result.json (one training run each) and oak.json (the
OAK-style baseline on that run's encoder) and writes a Markdown report with PNG plots beside it:
metrics per arm (mean ± sample standard deviation over seeds), paired differences to the plain
arm, the label-decile breakdown, and graph-at-inference accuracy and latency. The findings
section between the markers is kept when the report is written again.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# ---------------------------------------------------------------- reading results


def load_results(runs: str | os.PathLike, arm_order: Sequence[str] = ()) -> tuple[list[dict[str, Any]],
                                                                                 list[dict[str, Any]]]:
    """(run results, OAK results) found under `runs`, sorted by dataset, arm (`arm_order` first), seed."""
    runs = Path(runs)
    order = {a: i for i, a in enumerate(arm_order)}

    def key(r: dict[str, Any]) -> tuple:
        return (r["dataset"], order.get(r["arm"], len(order)), r["arm"], r["seed"])

    res = sorted((json.loads(p.read_text()) for p in runs.glob("*/*/seed*/result.json")), key=key)
    oak = sorted((json.loads(p.read_text()) for p in runs.glob("*/*/seed*/oak.json")), key=key)
    return res, oak


def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (ddof 1; nan for one value) and count."""
    a = np.asarray(list(values), dtype=np.float64)
    if len(a) == 0:
        return math.nan, math.nan, 0
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else math.nan, len(a)


def group(results: list[dict[str, Any]]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """dataset -> arm -> results (one per seed), in order."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for r in results:
        out.setdefault(r["dataset"], {}).setdefault(r["arm"], []).append(r)
    return out


def summary(results: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, tuple[float, float, int]]]]:
    """dataset -> arm -> metric -> (mean, std, seeds), metrics as fractions."""
    return {ds: {arm: {k: mean_std(r["metrics"][k] for r in rs) for k in rs[0]["metrics"]} for arm, rs in arms.items()}
            for ds, arms in group(results).items()}


# ---------------------------------------------------------------- the report

REPORT_METRICS = ("P@1", "P@3", "P@5", "nDCG@5", "PSP@1", "PSP@5")
FINDINGS_START, FINDINGS_END = "<!-- findings:start -->", "<!-- findings:end -->"
FINDINGS_PLACEHOLDER = ("_To be written from the numbers above once the full study has run: where RAMEN helps, "
                        "where it does not, head vs tail, and the cost of graph-at-inference._")


def plus_minus(mean: float, std: float, scale: float = 100.0, digits: int = 2) -> str:
    if math.isnan(mean):
        return "-"
    s = f"{scale * mean:.{digits}f}"
    return s if math.isnan(std) else f"{s} ± {scale * std:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(r) + " |" for r in rows)]


def _arm_table(arms: dict[str, list[dict[str, Any]]]) -> list[str]:
    rows = []
    for arm, rs in arms.items():
        cells = [f"{arm}", str(len(rs))]
        cells += [plus_minus(*mean_std(r["metrics"][k] for r in rs)[:2]) for k in REPORT_METRICS]
        step = mean_std(r["step_seconds"]["median"] for r in rs if r["step_seconds"]["median"])
        wall = mean_std(r["train_seconds"] / 60 for r in rs if not r.get("resumed"))
        cells += [plus_minus(step[0], step[1], 1.0), plus_minus(wall[0], wall[1], 1.0, 1), str(rs[0]["steps"])]
        rows.append(cells)
    return _table(["arm", "seeds", *REPORT_METRICS, "s/step", "train min", "steps"], rows)


def _delta_table(arms: dict[str, list[dict[str, Any]]], base_arm: str = "plain",
                 only: Sequence[str] | None = None) -> list[str]:
    """Per-seed paired differences to `base_arm` (same seed): mean ± std, in points (all other arms,
    or `only` these)."""
    if base_arm not in arms:
        return [f"(no {base_arm} arm: no differences)"]
    base = {r["seed"]: r["metrics"] for r in arms[base_arm]}
    keys = ("P@1", "P@5", "PSP@1", "PSP@5")
    rows = []
    for arm, rs in arms.items():
        if arm == base_arm or (only is not None and arm not in only):
            continue
        paired = [r for r in rs if r["seed"] in base]
        cells = [arm, str(len(paired))]
        for k in keys:
            mean, std, n = mean_std(r["metrics"][k] - base[r["seed"]][k] for r in paired)
            mark = "" if n < 2 or math.isnan(std) else (" (>1 sd)" if abs(mean) > std else "")
            cells.append(("+" if mean > 0 else "") + plus_minus(mean, std) + mark)
        rows.append(cells)
    return _table(["arm", "paired seeds", *(f"Δ{k}" for k in keys)], rows)


def _versus_tables(arms: dict[str, list[dict[str, Any]]], versus: Sequence[Sequence[str]]) -> list[str]:
    """One paired table per (control, *arms) in `versus`: an arm against its matched control, where
    the plain arm is not the fair one (an arm that adds a lever to both sides)."""
    lines: list[str] = []
    for base_arm, *others in versus:
        present = [a for a in others if a in arms]
        if base_arm not in arms or not present:
            continue
        lines += [f"Difference to `{base_arm}`, paired by seed:", "", *_delta_table(arms, base_arm, present), ""]
    return lines


def _decile_table(arms: dict[str, list[dict[str, Any]]], field: str, col: int) -> list[str]:
    first = next(iter(arms.values()))[0]["deciles"]
    n_bins = len(first["labels"])
    rows = []
    for b in range(n_bins):
        name = f"{b + 1}" + (" (head)" if b == 0 else " (tail)" if b == n_bins - 1 else "")
        cells = [name, f"{first['labels'][b]:,}", f"{100 * first['train_share'][b]:.1f}"]
        cells += [plus_minus(*mean_std(r["deciles"][field][b][col] for r in rs)[:2]) for rs in arms.values()]
        rows.append(cells)
    return _table(["decile", "labels", "train %", *arms], rows)


def _oak_table(oaks: list[dict[str, Any]]) -> list[str]:
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for o in oaks:
        by.setdefault((o["dataset"], o["arm"]), []).append(o)
    rows = []
    for (ds, arm), os_ in by.items():
        base_p50 = mean_std(o["latency_ms"]["encoder_only"]["p50"] for o in os_)[0]
        for method, title in (("encoder_only", "encoder only (RAMEN's inference)"),
                              ("oak_style", "OAK-style: retrieved anchors"),
                              ("oracle_links", "OAK-style + oracle links")):
            have = [o for o in os_ if method in o]
            if not have:
                continue
            cells = [ds, arm, title]
            cells += [plus_minus(*mean_std(o[method]["metrics"][k] for o in have)[:2])
                      for k in ("P@1", "P@5", "PSP@1", "PSP@5")]
            if method == "oak_style":
                chosen = sorted({f"m={o['chosen']['m']}, α={o['chosen']['alpha']}" for o in have})
            elif method == "oracle_links":
                chosen = sorted({f"α={o[method]['alpha']}" for o in have})
            else:
                chosen = ["-"]
            cells.append("; ".join(chosen))
            lat = [o["latency_ms"][method] for o in have if method in o["latency_ms"]]
            p50, p99 = mean_std(x["p50"] for x in lat), mean_std(x["p99"] for x in lat)
            cells += [plus_minus(p50[0], p50[1], 1.0, 2), plus_minus(p99[0], p99[1], 1.0, 2),
                      f"{p50[0] / base_p50:.2f}" if lat and base_p50 > 0 else "-"]
            rows.append(cells)
    return _table(["dataset", "encoder", "inference", "P@1", "P@5", "PSP@1", "PSP@5", "chosen on held-out",
                   "p50 ms", "p99 ms", "p50 / encoder-only"], rows)


def _oak_breakdown(oaks: list[dict[str, Any]]) -> list[str]:
    rows = []
    for o in oaks:
        lat = o["latency_ms"]
        rows.append([o["dataset"], o["arm"], str(o["seed"]), f"{lat['oak_encode']['p50']:.2f}",
                     f"{lat['oak_anchor']['p50']:.3f}", f"{lat['oak_label']['p50']:.3f}",
                     f"{o['latency_setup']['anchors']:,}", f"{o['latency_setup']['load'][0]:.1f}"])
    return _table(["dataset", "encoder", "seed", "encode p50 ms", "anchor search + mix p50 ms",
                   "label search p50 ms", "anchors indexed", "load (1 min)"], rows)


def _depth(results: list[dict[str, Any]]) -> int:
    """K of the metrics at k = 1..K in the result files."""
    return max(int(key.split("@")[1]) for key in results[0]["metrics"] if key.startswith("P@"))


def _plots(grouped: dict[str, dict[str, list[dict[str, Any]]]], out_dir: Path, stem: str, K: int) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for ds, arms in grouped.items():
        names = list(arms)
        x = np.arange(len(names))
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, key in zip(axes, ("P@1", "PSP@1")):
            stats = [mean_std(100 * r["metrics"][key] for r in arms[a]) for a in names]
            means = [s[0] for s in stats]
            errs = [0.0 if math.isnan(s[1]) else s[1] for s in stats]
            ax.bar(x, means, yerr=errs, capsize=4, color=["#888888" if a == "plain" else "#3b75af" for a in names])
            for i, a in enumerate(names):
                ax.plot([i] * len(arms[a]), [100 * r["metrics"][key] for r in arms[a]], "k.", ms=4)
            ax.set_xticks(x, names, rotation=30, ha="right")
            ax.set_ylabel(f"{key} (%)")
            ax.set_title(f"{ds}: {key}, mean ± sd over seeds")
            lo = min(m - e for m, e in zip(means, errs))
            ax.set_ylim(max(0.0, lo - 0.15 * (max(means) - lo + 1.0)), None)
        fig.tight_layout()
        written.append(_save(fig, out_dir / f"{stem}_{_slug(ds)}_arms.png"))
        plt.close(fig)

        n_bins = len(next(iter(arms.values()))[0]["deciles"]["labels"])
        fig, ax = plt.subplots(figsize=(12, 4))
        width = 0.8 / len(names)
        for i, a in enumerate(names):
            stats = [mean_std(100 * r["deciles"]["P"][b][K - 1] for r in arms[a]) for b in range(n_bins)]
            ax.bar(np.arange(n_bins) + (i - (len(names) - 1) / 2) * width, [s[0] for s in stats], width,
                   yerr=[0.0 if math.isnan(s[1]) else s[1] for s in stats], capsize=2, label=a)
        ax.set_xticks(np.arange(n_bins), [f"{b + 1}" + ("\nhead" if b == 0 else "\ntail" if b == n_bins - 1 else "")
                                          for b in range(n_bins)])
        ax.set_xlabel("label-frequency decile (equal shares of training positives)")
        ax.set_ylabel(f"contribution to P@{K} (%)")
        ax.set_title(f"{ds}: P@{K} by label decile, mean ± sd over seeds")
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
        fig.tight_layout()
        written.append(_save(fig, out_dir / f"{stem}_{_slug(ds)}_deciles.png"))
        plt.close(fig)
    return written


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", s).strip("-")


def _save(fig, path: Path) -> Path:
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)
    return path


def kept_findings(path: Path, default: str = FINDINGS_PLACEHOLDER) -> str:
    """The findings text between the markers of an existing report (kept across regenerations),
    else `default`."""
    if path.exists():
        text = path.read_text()
        a, b = text.find(FINDINGS_START), text.find(FINDINGS_END)
        if a >= 0 and b > a:
            return text[a + len(FINDINGS_START):b].strip("\n")
    return default


DEFAULT_TITLE = "Accuracy study: RAMEN against the plain dual encoder, its ablations, AugGT and graph-at-inference"


def write_report(runs: str | os.PathLike, out: str | os.PathLike, *, arm_order: Sequence[str] = (),
                 arm_titles: dict[str, str] | None = None, arms: Sequence[str] | None = None,
                 title: str = DEFAULT_TITLE, versus: Sequence[Sequence[str]] = ()) -> tuple[Path, list[Path]]:
    """Writes the Markdown report `out` and its PNG plots beside it from the JSONs under `runs`
    (only the runs of `arms`, in that order, where given; `versus`: (control, arm, ...) groups that
    also get a paired table against their control)."""
    runs, out = Path(runs), Path(out)
    arm_titles = arm_titles or {}
    results, oaks = load_results(runs, arms or arm_order)
    if arms:
        results = [r for r in results if r["arm"] in arms]
        oaks = [o for o in oaks if o["arm"] in arms]
    if not results:
        raise ValueError(f"no result.json under {runs}{' for arms ' + ' '.join(arms) if arms else ''}: run the study "
                         "first (python benchmarks/accuracy.py run)")
    out.parent.mkdir(parents=True, exist_ok=True)
    grouped = group(results)
    K = _depth(results)
    plots = _plots(grouped, out.parent, out.stem, K)
    first = results[0]
    machine = first["machine"]
    loads = [x for r in results for x in (r["load"]["before"][0], r["load"]["after"][0])]
    versions = ", ".join(f"{k} {machine[k]}" for k in ("python", "numpy", "scipy", "torch", "transformers", "usearch")
                         if k in machine)
    commits = sorted({f"{r['ramen'].get('commit')}{' (dirty)' if r['ramen'].get('dirty') else ''}" for r in results})
    commands = sorted({r["command"] for r in results} | {o.get("command", "") for o in oaks} - {""})
    lines = [
        f"# {title}",
        "",
        f"Generated by `python benchmarks/accuracy.py report --runs {runs} --out {out.name}"
        f"{' --arms ' + ' '.join(arms) if arms else ''}"
        f"{''.join(' --versus ' + ' '.join(v) for v in versus)}` from {len(results)} runs "
        f"({datetime.datetime.now().isoformat(timespec='minutes')}). Code: `benchmarks/accuracy.py` (protocol in its "
        "docstring), `benchmarks/accuracy_report.py`, OAK-style peer `src/ramen/bench/peers/oak_style.py`.",
        "",
        "## How it was run",
        "",
        "Commands that produced these runs:",
        "",
        *(f"    {c}" for c in commands),
        "",
        f"- Seeds: {sorted({r['seed'] for r in results})} (initialisation, batch order, densification walks); one fixed "
        "data split per dataset.",
        f"- Machine: {machine.get('cpu')}, {machine.get('cores')} cores, torch threads "
        f"{', '.join(sorted({str(r['machine'].get('torch_threads')) for r in results}))}"
        f"{', GPU ' + machine['gpu'] if 'gpu' in machine else ''}; 1-min load average during the runs "
        f"{min(loads):.1f} to {max(loads):.1f} (the machine is shared: times are indicative).",
        f"- Versions: {versions}; ramen {first['ramen'].get('version')} at commit(s) {', '.join(commits)}.",
        "- Metrics: exact search, k = 5, test split, propensity A, B of each dataset; mean ± sample standard "
        "deviation (ddof 1) over seeds, in %. `s/step`: median training step; `train min`: wall time of `ramen.train` "
        "(runs resumed after an interruption left out).",
        "",
        "Data and budget:",
        "",
    ]
    for ds, arms in grouped.items():
        r0 = next(iter(arms.values()))[0]
        info = r0["data"]
        budget = {k: v for k, v in r0["config"].items() if k not in ("seed",) and k not in r0["overrides"]}
        shown = ", ".join(f"{k}={budget[k]}" for k in ("encoder", "epochs", "batch_size", "lr", "warmup", "margin",
                                                       "num_negatives", "densify", "walk_length", "restart_prob",
                                                       "densify_top_k", "warmup_epochs", "prune_every",
                                                       "prune_threshold", "lambda_x", "lambda_z") if k in budget)
        lines += [f"- **{ds}**: {r0['source']}; {info['train']:,} training queries ({info['held_out']:,} more held "
                  f"out of training, seed {info['split_seed']}), {info['test']:,} test queries, {info['labels']:,} "
                  f"labels; anchor sets {', '.join(f'{n} ({c:,})' for n, c in info['anchor_sets'].items())}. "
                  f"Budget: {shown}."]
    lines += ["", "Arms (TrainConfig overrides of the budget):", ""]
    ran = {r["arm"]: r["overrides"] for r in results}
    lines += [f"- `{a}`: {arm_titles.get(a, a)}: `{json.dumps(o)}`" for a, o in ran.items()]
    lines += ["", "## Results", ""]
    for ds, arms in grouped.items():
        lines += [f"### {ds}", "", *_arm_table(arms), "",
                  "Difference to the plain dual encoder, paired by seed (points; `>1 sd`: the mean difference exceeds "
                  "its standard deviation over seeds):", "", *_delta_table(arms), "",
                  *_versus_tables(arms, versus),
                  f"![P@1 and PSP@1 per arm]({out.stem}_{_slug(ds)}_arms.png)", "",
                  f"Contribution of each label decile to P@{K} (head to tail; the deciles sum to P@{K}; labels sorted "
                  "by training frequency, each decile holding a tenth of the training positives):", "",
                  *_decile_table(arms, "P", K - 1), "",
                  "Contribution of each label decile to P@1:", "", *_decile_table(arms, "P", 0), "",
                  f"Recall@{K} within each decile (the share of the decile's test positives found in the top {K}):",
                  "", *_decile_table(arms, "R", K - 1), "",
                  f"![P@{K} by label decile]({out.stem}_{_slug(ds)}_deciles.png)", ""]
    lines += ["## Graph at inference: an OAK-style baseline", ""]
    if oaks:
        lines += [
            "RAMEN's inference is the encoder alone (encode the query, search the labels). The OAK-style baseline "
            "(`src/ramen/bench/peers/oak_style.py`) takes the same trained encoder and uses the graph at inference: it "
            "retrieves the query's top-m anchors (all anchor sets in one index) and searches the labels with "
            "normalize(q + α · cosine-weighted mean of the anchors). m and α are chosen by P@1 on the held-out "
            "training queries (grid m ∈ " + str(list(oaks[0]['settings']['m'])) + ", α ∈ "
            + str(list(oaks[0]['settings']['alpha'])) + "; α = 0 is the encoder alone), never on test. "
            "'+ oracle links' mixes in the test query's own graph links instead (the paper's OAK + Oracle: no "
            "deployed system has them for a novel query). It has no trained combiner, so it is a floor of what "
            "OAK's learned fusion could add and of what it costs.",
            "",
            "Accuracy: exact search. Latency: one query at a time, one thread (torch and index), the HNSW label index "
            "that `ramen.train` saves and an HNSW anchor index (defaults); each pipeline sweeps "
            f"{oaks[0]['latency_setup']['queries']} test queries in turn after 5 warm-up ones, twice, the order of "
            "the pipelines reversed in the second round; mean over seeds of each seed's p50 / p99. The OAK-style "
            "pipeline runs its anchor search even where α = 0 was chosen.",
            "", *_oak_table(oaks), "", "Where the OAK-style time goes (p50 per stage):", "", *_oak_breakdown(oaks), ""]
    else:
        lines += ["(not run)", ""]
    lines += ["## Findings", "", FINDINGS_START, kept_findings(out), FINDINGS_END, ""]
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, out)
    return out, plots
