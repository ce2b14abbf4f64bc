"""Watching for representation collapse: the mean cosine between a batch's embeddings.

A triplet loss whose negatives are too hard, or graph regularisers weighted too high, can pull
every embedding into a narrow cone (benchmarks/results/graph_confusers.md: the paper's recipe on
Wikispeedia ends with every query-label cosine near 0.99). The loss does not show it; the spread does.
"""
from __future__ import annotations

import torch

from ramen.config import TrainConfig

COLLAPSE_COS = 0.9  # mean in-batch cosine above which the run is warned about
WINDOW = 20  # steps averaged before warning


def mean_pairwise_cosine(x: torch.Tensor) -> torch.Tensor:
    """Mean cosine over the distinct pairs of rows of `x` (N x D), a 0-d tensor on x's device (no
    host read); nan for fewer than 2 rows."""
    n = x.shape[0]
    if n < 2:
        return x.new_full((), float("nan"), dtype=torch.float32)
    x = torch.nn.functional.normalize(x.detach().float(), dim=-1)
    total = x.sum(0)
    return ((total @ total) - (x * x).sum()) / (n * (n - 1))


def collapse_advice(cfg: TrainConfig) -> str:
    """What to change in `cfg` against a collapse: only the settings measured to cause one."""
    steps = []
    if cfg.num_negatives is not None:  # with random negatives on the synthetic benchmark
        steps.append(f"contrast with all in-batch labels (num_negatives=None, now {cfg.num_negatives})")
    if cfg.graph:
        if cfg.reg_num_negatives is not None:
            steps.append(f"push away from all in-batch anchors (reg_num_negatives=None, now {cfg.reg_num_negatives})")
        steps.append("lower lambda_x / lambda_z")
    return "; ".join(steps) or "no setting measured to cause a collapse is on"


class CollapseWatch:
    """Running mean of the in-batch label cosine; says once when it stays above COLLAPSE_COS."""

    def __init__(self, threshold: float = COLLAPSE_COS, window: int = WINDOW,
                 advice: str = "lower lambda_x / lambda_z"):  # see collapse_advice
        self.threshold, self.window, self.advice = threshold, window, advice
        self.recent: list[float] = []
        self.warned = False

    def replay(self, records: list[dict]) -> str | None:
        """Puts the watch where a run's log (`records`, a resumed run's) left it, so that a resume warns
        as an uninterrupted run does: once, after the same step. Returns a warning that was due when the
        run stopped but is not in the log yet."""
        self.recent, self.warned, due = [], False, None
        for r in records:
            if r.get("event") == "step":
                due = self.update(float((r.get("spread") or {}).get("label", float("nan")))) or due
            elif r.get("warning") == "collapse":
                self.warned, due = True, None
        return due

    def update(self, cos: float) -> str | None:
        """The warning to show (once), else None."""
        if cos == cos:  # not nan
            self.recent = (self.recent + [cos])[-self.window:]
        if self.warned or len(self.recent) < self.window:
            return None
        mean = sum(self.recent) / len(self.recent)
        if mean <= self.threshold:
            return None
        self.warned = True
        return (f"embeddings are collapsing: the mean cosine between a batch's labels has been {mean:.3f} "
                f"over the last {self.window} steps (> {self.threshold}); rankings lose resolution. To avoid it: "
                f"{self.advice} (benchmarks/results/graph_levers.md)")
