"""Suite `accuracy`: RAMEN against the plain dual encoder, its ablations, AugGT and an OAK-style
graph-at-inference baseline (issue 7).

The study lives in the source tree's `benchmarks/accuracy.py` (library and CLI; protocol in its
docstring); from a checkout this suite loads it from there, runs every missing run and writes the
report. From an installed wheel (no source tree) it trains the named recipes instead (`recipe_rows`:
plain, light-graph and the paper's, one seed, the same budget) and reports them against plain. Full mode
trains 36 runs (hours on 2 CPU cores) into runs/accuracy/ and writes
benchmarks/results/accuracy.md; it resumes where it stopped. Quick mode runs the whole pipeline on
synthetic('tiny') with a tiny random encoder in a temporary directory.
Rows: each arm's P@1 and PSP@1 beside the plain dual encoder's (ratio = arm / plain), and RAMEN's
encoder-only inference beside the OAK-style pipeline (accuracy and single-query p50 latency).
"""
from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

from ramen.bench.common import Row, benchmarks_dir

SUITE = "accuracy"


def load_study() -> ModuleType:
    """benchmarks/accuracy.py of the source tree, or ImportError saying why."""
    root = benchmarks_dir()
    path = root / "accuracy.py" if root is not None else None
    if path is None or not path.exists():
        raise ImportError("the accuracy study lives in the source tree's benchmarks/accuracy.py: run "
                          "`python -m ramen.bench --suite accuracy` from a checkout of the ramen repository")
    name = "ramen_benchmark_accuracy"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses resolve their module by name
        spec.loader.exec_module(module)
    return sys.modules[name]


def rows_from(study: ModuleType, results: list[dict[str, Any]], oaks: list[dict[str, Any]],
              settings: dict[str, Any]) -> list[Row]:
    """Rows of a finished study: arms against the plain arm, encoder-only against OAK-style."""
    rows = []
    for ds, arms in study.summary(results).items():
        plain = arms.get("plain")
        for arm, m in arms.items():
            if arm == "plain":
                continue
            for key in ("P@1", "PSP@1"):
                mean, std, n = m[key]
                rows.append(Row(SUITE, f"{ds}/{arm}", key, 100 * mean, None if plain is None else 100 * plain[key][0],
                                "plain", "%", "higher",
                                {**settings, "seeds": n, "sd": "-" if n < 2 else round(100 * std, 2)}))
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for o in oaks:
        by.setdefault((o["dataset"], o["arm"]), []).append(o)
    for (ds, arm), os_ in by.items():
        mean = study.mean_std
        case = f"{ds}/{arm} encoder"
        for key in ("P@1", "PSP@1"):
            rows.append(Row(SUITE, case, f"{key} encoder-only", 100 * mean(o["encoder_only"]["metrics"][key] for o in os_)[0],
                            100 * mean(o["oak_style"]["metrics"][key] for o in os_)[0], "OAK-style", "%", "higher",
                            {"seeds": len(os_)}))
        rows.append(Row(SUITE, case, "p50 latency encoder-only", mean(o["latency_ms"]["encoder_only"]["p50"] for o in os_)[0],
                        mean(o["latency_ms"]["oak_style"]["p50"] for o in os_)[0], "OAK-style", "ms", "lower",
                        {"threads": 1, "queries": os_[0]["latency_setup"]["queries"]}))
    return rows


RECIPES = ("light-graph", "paper")  # measured against "plain" where the study is not at hand


def recipe_rows(quick: bool) -> list[Row]:
    """The named recipes against the plain dual encoder, trained with one budget on the synthetic
    benchmark (quick: its tiny size and a tiny random encoder, one epoch; else MiniLM on its small
    size, the study's 10 epochs of batch 128): each recipe's P@1 and PSP@1 beside plain's."""
    from ramen import recipe, synthetic, train

    dataset = synthetic("tiny" if quick else "small", seed=0)
    budget = (dict(encoder="tiny", epochs=1, batch_size=32, lr=1e-3, walk_length=20, warmup_epochs=0,
                   prune_every=1, dropout=0.0, encode_batch_size=64) if quick else dict(epochs=10, batch_size=128))
    budget.update(eval_every=0, seed=0)
    scores = {}
    for name in ("plain", *RECIPES):
        model = train(dataset, recipe(name, **budget).without_idle(), progress=False)  # one budget for all
        m = model.evaluate(dataset, k=5, progress=False)
        scores[name] = {"P@1": 100 * float(m["P"][0]), "PSP@1": 100 * float(m["PSP"][0])}
    settings = {"quick": quick, "data": dataset.name, "encoder": budget.get("encoder", "all-MiniLM-L6-v2"),
                "epochs": budget["epochs"], "seeds": 1, "source": "recipes (no source tree: the study is "
                "benchmarks/accuracy.py in a checkout)"}
    return [Row(SUITE, f"{dataset.name}/{name}", key, scores[name][key], scores["plain"][key], "plain", "%",
                "higher", settings) for name in RECIPES for key in ("P@1", "PSP@1")]


def run(quick: bool = False) -> list[Row]:
    if benchmarks_dir() is None:  # an installed wheel
        return recipe_rows(quick)
    study = load_study()
    if quick:
        with tempfile.TemporaryDirectory(prefix="ramen-accuracy-") as tmp:
            runs = Path(tmp) / "runs"
            study.run_study(study.Study.quick(), runs, progress=False)
            study.write_report(runs, Path(tmp) / "accuracy.md")
            results, oaks = study.load_results(runs)
    else:
        runs = Path("runs/accuracy")
        study.run_study(study.Study(), runs)
        study.write_report(runs, benchmarks_dir() / "results" / "accuracy.md")
        results, oaks = study.load_results(runs)
    return rows_from(study, results, oaks, {"quick": quick})
