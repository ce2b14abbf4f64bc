"""A run's JSON-lines log (losses, metrics, pruning events) and the PNG plot of its curves."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm


class RunLog:
    """Appends one JSON object per event to `path` (when given) and keeps them for plotting."""

    def __init__(self, path: str | os.PathLike | None, *, echo: bool = True):
        self.path = Path(path) if path else None
        self.echo = echo
        self.records: list[dict[str, Any]] = []
        if self.path and self.path.exists():
            self.records = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def truncate(self, global_step: int) -> None:
        """Drops records written after `global_step` (a resumed run rewrites them)."""
        self.records = [r for r in self.records if r.get("global_step", 0) <= global_step]
        if self.path:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in self.records))
            tmp.replace(self.path)

    def write(self, record: dict[str, Any], *, message: str | None = None) -> None:
        self.records.append(record)
        if self.path:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        if message and self.echo:
            tqdm.write(message)

    def info(self, text: str, **fields: Any) -> None:
        """A free-text note (warnings about the data, pruning, ...), printed and logged."""
        self.write({"event": "info", "text": text, **fields}, message=text)


def plot_curves(records: list[dict[str, Any]], path: str | os.PathLike) -> Path | None:
    """Writes a PNG of the loss components per step and the metrics per epoch; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    steps = [r for r in records if r.get("event") == "step"]
    evals = [r for r in records if r.get("event") == "eval"]
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(11, 4))
    keys = sorted({k for r in steps for k in r.get("losses", {})})
    for key in keys:
        xs = [r["global_step"] for r in steps if key in r["losses"]]
        ys = [r["losses"][key] for r in steps if key in r["losses"]]
        if len(ys) >= 5:  # a running mean keeps noisy components readable
            w = max(1, len(ys) // 20)
            ys = np.convolve(ys, np.ones(w) / w, mode="valid").tolist()
            xs = xs[len(xs) - len(ys):]
        ax_loss.plot(xs, ys, label=key)
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
