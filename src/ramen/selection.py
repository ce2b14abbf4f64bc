"""The graph's weight chosen per run on held-out training queries (issue 28): the paper's adaptive
reliance done at the level of runs. Each candidate weight trains on the training queries less a
held-out slice; the one with the best held-out P@1 (then PSP@1; a tie goes to the smaller weight,
0 being the plain encoder) is trained again on every training query. Cost: len(weights) runs on
(1 - held_out) of the queries, then one full run.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ramen import distributed, run_dir
from ramen.config import TrainConfig
from ramen.datasets import Dataset
from ramen.datasets.held_out import HeldOutSplit, hold_out
from ramen.digest import data_fingerprint, differing
from ramen.files import replace_file
from ramen.model import Model
from ramen.train_state import CHECKPOINT, RESUME_MAY_CHANGE

DEFAULT_WEIGHTS = (0.0, 0.03, 0.1)  # lambda_x = lambda_z; 0 is the plain dual encoder
SELECTION_JSON = "selection.json"
PLAN_JSON = "selection-plan.json"  # what a selection was started with: data, held-out split, settings
WEIGHT_SETTINGS = ("graph", "lambda_x", "lambda_z", "lambdas")  # set per candidate by weight_config


@dataclasses.dataclass
class Selection:
    """What was tried and chosen: held-out P@1 and PSP@1 (fractions) for each weight."""

    weights: list[float]
    held_out: dict[str, dict[str, float]]  # str(weight) -> {"P@1", "PSP@1"}
    chosen: float
    held_out_queries: int


def weight_config(config: TrainConfig, weight: float) -> TrainConfig:
    """`config` with the graph at `weight` for R_x and R_z of every anchor set (off at 0, with the other
    graph settings, which it then leaves unread, at their defaults): every WEIGHT_SETTINGS field is
    set, so a candidate depends on `config` only through the others."""
    cand = dataclasses.replace(config, graph=weight > 0, lambda_x=weight, lambda_z=weight, lambdas={})
    return cand if weight > 0 else dataclasses.replace(cand.without_idle(), lambda_x=0.0, lambda_z=0.0)


def select_graph_weight(dataset: Dataset, config: TrainConfig | None = None, *,
                        weights: tuple[float, ...] | list[float] = DEFAULT_WEIGHTS, held_out: float = 0.1,
                        out_dir: str | os.PathLike | None = None, resume: bool = False,
                        progress: bool = True, _on_set_up: Callable[[], None] | None = None
                        ) -> tuple[Model, Selection]:
    """Trains `config` at each graph weight on the training queries less a seeded `held_out`
    fraction, chooses the weight by held-out P@1, trains it on every training query and returns
    that model with the Selection. With `out_dir`: candidates in out_dir/weight-<w>, the final run
    in out_dir itself, `selection.json` beside it; `resume=True` continues an interrupted selection.
    (`_on_set_up`, for the CLI: called once a new selection has taken out_dir over.)"""
    config = (config or TrainConfig()).validate()
    weights = checked_weights(weights)
    if not 0.0 < float(held_out) < 1.0:
        raise ValueError(f"held_out must be in (0, 1), got {held_out}")
    if config.lambdas:  # weight_config gives every set the same weight
        raise ValueError(f"select_graph_weight gives every anchor set each candidate's weight, so it cannot keep "
                         f"lambdas={config.lambdas!r} (per anchor set weights): leave lambdas empty (anchor_sets "
                         "chooses the sets), or train that config without a selection")
    if config.aug_gt:
        raise ValueError("select_graph_weight chooses the regulariser's weight, and aug_gt=True trains without the "
                         "regulariser (it adds labels through the graph): use one or the other")
    from ramen.training_graphs import used_anchor_sets

    # the graph candidates' checks, before the weight-0 one trains and the selection takes the directory over
    used_anchor_sets(dataset, weight_config(config, max(weights) or 1.0))  # a set the data lacks
    if not resume:  # every candidate would be refused (train does) but the weight-0 one
        from ramen.train import refuse_idle

        refuse_idle(weight_config(config, max(weights) or 1.0), "select_graph_weight")
    split = hold_out(dataset, held_out, seed=config.seed)
    d = distributed.setup(config.device)  # under torchrun every rank trains, rank 0 evaluates and writes
    with run_dir.claimed(out_dir, fresh=not resume, main=d.main):  # the final run's train() re-enters it
        return _select(dataset, config, weights, held_out, split, d, out_dir, resume, progress, _on_set_up)


def _select(dataset: Dataset, config: TrainConfig, weights: list[float], held_out: float, split: HeldOutSplit,
            d: distributed.Dist, out_dir: str | os.PathLike | None, resume: bool, progress: bool,
            on_set_up: Callable[[], None] | None) -> tuple[Model, Selection]:
    """select_graph_weight's candidates and final run, in a directory it holds."""
    from ramen.train import train

    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        plan = selection_plan(dataset, config, held_out)
        if resume:
            check_plan(out, plan)
        out.mkdir(parents=True, exist_ok=True)
        if d.main and resume:
            _write_json(out / PLAN_JSON, plan)
    measured = np.zeros((len(weights), 2))
    for i, w in enumerate(weights):
        cand = out / f"weight-{w:g}" if out is not None else None
        # a new selection takes the directory over once its first candidate is set up: a refused one
        # leaves the finished selection there as it was, one stopped later leaves none of it to resume
        take_over = (lambda cand=cand: _take_over(out, plan, cand, on_set_up)) \
            if cand is not None and not resume and i == 0 else None
        # what rank 0 finds decides for every rank (a rank that trained another candidate would hang)
        if distributed.agree(resume and cand is not None and _finished(cand), d):
            model = Model.load(cand / "model")  # finished before the interruption
        else:
            again = distributed.agree(resume and cand is not None and (cand / CHECKPOINT).exists(), d)
            model = train(split.train, weight_config(config, w), out_dir=cand, resume=again, progress=progress,
                          _on_set_up=take_over)
        if d.main:
            m = model.evaluate(split.held, k=1, batch_size=config.encode_batch_size, progress=False)
            measured[i] = m["P"][0], m["PSP"][0]
    measured = distributed.broadcast_arrays([measured.ravel()] if d.main else None, 1, d)[0].reshape(-1, 2)
    scores = {f"{w:g}": {"P@1": float(p), "PSP@1": float(q)} for w, (p, q) in zip(weights, measured)}
    chosen = max(weights, key=lambda w: (scores[f"{w:g}"]["P@1"], scores[f"{w:g}"]["PSP@1"], -w))  # rank 0's
    selection = Selection(list(weights), scores, chosen, len(split.rows))
    if out is not None and d.main:
        _write_json(out / SELECTION_JSON, dataclasses.asdict(selection))
    final_resume = distributed.agree(resume and out is not None and (out / CHECKPOINT).exists(), d)
    model = train(dataset, weight_config(config, chosen), out_dir=out, resume=final_resume, progress=progress)
    return model, selection


def _take_over(out: Path, plan: dict[str, Any], first: Path, on_set_up: Callable[[], None] | None) -> None:
    """Takes `out` over for a new selection once its `first` candidate is set up: removes an earlier
    selection's other candidates, choice and final run (a resume would take them for its own: a
    candidate trained with another lr, scored and chosen), then writes the new plan, last, so that a
    kill in between leaves no plan beside another selection's candidates."""
    discard_selection(out, keep=first.name)
    run_dir.discard(out, run_dir.OUTPUTS)
    if on_set_up is not None:
        on_set_up()
    _write_json(out / PLAN_JSON, plan)


def discard_selection(out: Path, keep: str | None = None) -> None:
    """Removes what a selection wrote in `out` beside its final run: its plan, its choice and its
    candidates (but `keep`), which a later run there would otherwise be read with."""
    for p in out.iterdir():
        if _CANDIDATE.fullmatch(p.name) and p.is_dir() and not p.is_symlink() and p.name != keep:
            run_dir.discard(p)
    run_dir.discard(out, (PLAN_JSON, SELECTION_JSON))


_CANDIDATE = re.compile(r"weight-[0-9.e+-]+")  # weight-<w:g>


def _finished(cand: Path) -> bool:
    """Whether a candidate's training finished: its config.json is the last file train writes, after
    the model (one stopped between the two is resumed, which writes the rest)."""
    return (cand / "model").is_dir() and (cand / "config.json").is_file()


def selection_plan(dataset: Dataset, config: TrainConfig, held_out: float) -> dict[str, Any]:
    """What a resumed selection must share with the one it continues: the data (a digest of each part,
    `ramen.digest.data_fingerprint`), the held-out fraction (with config.seed, the split) and the
    settings a candidate trains with, but the graph weight itself. The weights may change on resume."""
    data = data_fingerprint(dataset)
    settings = {k: v for k, v in config.to_dict().items() if k not in WEIGHT_SETTINGS}
    return json.loads(json.dumps({"held_out": float(held_out), "data": data, "config": settings}))


def check_plan(out: Path, plan: dict[str, Any]) -> None:
    """A ValueError naming what differs when the selection in `out` was started on other data, another
    held-out split or other settings: its finished candidates would not be comparable."""
    path = out / PLAN_JSON
    if not path.exists():
        return  # nothing started there yet (or a selection from before plans were written)
    try:
        old = json.loads(path.read_text())
        old_config = old["config"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a selection plan ({exc}); start a new selection without resume") from None
    changed = ["held_out"] if old.get("held_out") != plan["held_out"] else []
    changed += [f"data ({', '.join(differing(old.get('data') or {}, plan['data']))})"] if old.get("data") != plan["data"] else []
    changed += [k for k, v in plan["config"].items() if k not in RESUME_MAY_CHANGE and old_config.get(k) != v]
    if changed:
        raise ValueError(f"cannot resume the selection in {out}: it was started with other "
                         f"{', '.join(changed)} ({path}); start a new one without resume, or in another directory")


def checked_weights(weights: Any) -> list[float]:
    try:
        out = [float(w) for w in weights]
    except (TypeError, ValueError):
        raise ValueError(f"weights must be numbers, got {weights!r}") from None
    if not out:
        raise ValueError("weights must name at least one graph weight (0: the plain encoder)")
    bad = [w for w in out if not (w >= 0 and w < float("inf"))]
    if bad:
        raise ValueError(f"weights must be finite and >= 0, got {bad}")
    if len(set(out)) != len(out):
        raise ValueError(f"weights must differ, got {out}")
    return out


def _write_json(path: Path, obj: Any) -> None:
    replace_file(path, (json.dumps(obj, indent=1) + "\n").encode())
