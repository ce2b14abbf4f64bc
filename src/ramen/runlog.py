"""A run's JSON-lines log (losses, metrics, pruning events) and the PNG plot of its curves."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm


class RunLog:
    """Appends one JSON object per event to `path` (when given) and keeps them for plotting. An
    existing log is read back to continue it; a `fresh` log (a new run in the directory) holds its
    records in memory until `start`, which writes them over the earlier run's log: a run stopped
    before its set-up leaves that log as it was, beside the model it describes."""

    def __init__(self, path: str | os.PathLike | None, *, echo: bool = True, fresh: bool = False):
        self.path = Path(path) if path else None
        self.echo = echo
        self.records: list[dict[str, Any]] = []
        self._held = fresh  # records not yet written: the new run is not set up
        if self.path and self.path.exists() and not fresh:
            self.records = _read_records(self.path)

    def start(self) -> None:
        """The new run is set up: its records so far replace the earlier run's log, later ones append."""
        if self._held:
            self._held = False
            self._rewrite()

    def truncate(self, global_step: int) -> None:
        """Drops the records written after `global_step` (a resumed run rewrites them): those from the
        first one past it on, so the notes written between the lost steps (a warning) go with them."""
        past = next((i for i, r in enumerate(self.records) if r.get("global_step", 0) > global_step), None)
        self.records = self.records[:past]
        self._rewrite()

    def discard(self, event: str) -> None:
        """Drops every record of `event` (one a resumed run writes again, as the finished run's index)."""
        kept = [r for r in self.records if r.get("event") != event]
        if len(kept) < len(self.records):
            self.records = kept
            self._rewrite()

    def _rewrite(self) -> None:
        """The file holds exactly `records` (written to a temporary name, then renamed)."""
        if self.path:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in self.records))
            tmp.replace(self.path)

    def write(self, record: dict[str, Any], *, message: str | None = None) -> None:
        self.records.append(record)
        if self.path and not self._held:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        if message and self.echo:
            tqdm.write(message)

    def info(self, text: str, **fields: Any) -> None:
        """A free-text note (warnings about the data, pruning, ...), printed and logged."""
        self.write({"event": "info", "text": text, **fields}, message=text)


def _read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a log file. A last line cut short (the process stopped while appending it) is
    dropped; any other line that is not a JSON object is a ValueError naming the file and line."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    records = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            if i == len(lines):
                break
            raise ValueError(f"{path}:{i}: not a JSON record of a run log") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{i}: not a JSON record of a run log")
        records.append(record)
    return records


def plot_curves(records: list[dict[str, Any]], path: str | os.PathLike) -> Path | None:
    """Writes a PNG of the loss components and the in-batch cosine per step and the metrics per epoch;
    None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    steps = [r for r in records if r.get("event") == "step"]
    evals = [r for r in records if r.get("event") == "eval" and r.get("split", "test") == "test"]
    fig, (ax_loss, ax_spread, ax_metric) = plt.subplots(1, 3, figsize=(15, 4))
    keys = sorted({k for r in steps for k in r.get("losses", {})})
    for key in keys:
        _plot_smoothed(ax_loss, [(r["global_step"], r["losses"][key]) for r in steps if key in r["losses"]], key)
    for key in ("query", "label"):
        _plot_smoothed(ax_spread, [(r["global_step"], r["spread"][key]) for r in steps
                                   if key in r.get("spread", {}) and r["spread"][key] == r["spread"][key]], key)
    ax_spread.set_xlabel("step")
    ax_spread.set_ylabel("mean cosine")
    ax_spread.set_title("in-batch cosine (near 1: collapse)")
    if any("spread" in r for r in steps):
        ax_spread.legend(fontsize=7)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("training losses")
    if keys:
        ax_loss.legend(fontsize=7)
    for name in ("P@1", "P@5", "nDCG@5", "PSP@1", "PSP@5"):
        xs = [r["epoch"] for r in evals if name in r.get("metrics", {})]
        ys = [100 * r["metrics"][name] for r in evals if name in r.get("metrics", {})]
        if xs:
            ax_metric.plot(xs, ys, marker="o", label=name)
    ax_metric.set_xlabel("epoch")
    ax_metric.set_ylabel("%")
    ax_metric.set_title("test metrics")
    if evals:
        ax_metric.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path


def _plot_smoothed(ax, points: list[tuple[int, float]], label: str) -> None:
    """A running mean (window: a twentieth of the points) keeps noisy curves readable."""
    if not points:
        return
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    if len(ys) >= 5:
        w = max(1, len(ys) // 20)
        ys = np.convolve(ys, np.ones(w) / w, mode="valid").tolist()
        xs = xs[len(xs) - len(ys):]
    ax.plot(xs, ys, label=label)
