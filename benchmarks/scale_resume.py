"""Resume at scale continues exactly (issue 26): a graph run (`--graph`, tiny encoder, batch 1024,
two epochs with pruning before the second, dropout on) on a fraction of the paper's shape, once
straight through and once interrupted by SIGINT (Ctrl-C) after pruning, in the second epoch, then
resumed from its checkpoint. Prints whether every step's loss, every evaluation, the prune
record and the final weights are the same, and writes them as JSON.

    python benchmarks/scale_resume.py --size 0.1 --json benchmarks/results/scale-resume-0.1.json
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import torch


def records(run: Path, event: str) -> list[dict]:
    return [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if r.get("event") == event]


def _step_values(run: Path) -> list[tuple]:
    """Each step's number, losses and learning rate (not its timing)."""
    return [(r["global_step"], r["loss"], sorted(r["losses"].items()), r["lr"]) for r in records(run, "step")]


def weights_hash(model) -> str:  # noqa: ANN001
    h = hashlib.sha256()
    for k, v in model.encoder.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().float().numpy().tobytes())
    return h.hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="0.1", help="a fraction of the paper's shape, or a synthetic preset")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

    import ramen.step as step_module
    from ramen.bench.common import machine_info
    from ramen.bench.scale import dataset_config
    from ramen.config import TrainConfig
    from ramen.datasets.synthetic import synthetic
    from ramen.train import train

    torch.set_num_threads(1)
    preset, overrides = dataset_config(args.size)
    ds = synthetic(preset, seed=0, **overrides)
    cfg = TrainConfig(encoder="tiny", graph=True, epochs=2, batch_size=1024, lr=1e-3, warmup_epochs=1, prune_every=1,
                      eval_every=1, eval_max_queries=2000, seed=0)
    steps_per_epoch = -(-len(ds.train_texts) // cfg.batch_size)
    at = steps_per_epoch + steps_per_epoch // 2  # mid second epoch, after pruning
    with tempfile.TemporaryDirectory(prefix="ramen-scale-resume-") as tmp:
        t0 = time.perf_counter()
        full_model = train(ds, cfg, out_dir=Path(tmp) / "full", progress=False)
        full_s = time.perf_counter() - t0
        real, calls = step_module.ramen_loss, {"n": 0}

        def interrupting(*a, **kw):  # noqa: ANN002, ANN003
            calls["n"] += 1
            if calls["n"] == at:  # Ctrl-C in the middle of a step: held until the step is done
                os.kill(os.getpid(), signal.SIGINT)
            return real(*a, **kw)

        step_module.ramen_loss = interrupting
        part = Path(tmp) / "part"
        try:
            train(ds, cfg, out_dir=part, progress=False)
            raise SystemExit("the run was not interrupted")
        except KeyboardInterrupt:
            pass
        finally:
            step_module.ramen_loss = real
        t0 = time.perf_counter()
        part_model = train(ds, cfg, out_dir=part, resume=True, progress=False)
        resume_s = time.perf_counter() - t0
        full, resumed = Path(tmp) / "full", part
        same = {event: records(full, event) == records(resumed, event) for event in ("eval", "prune")}
        same["step"] = _step_values(full) == _step_values(resumed)
        result = {
            "command": "python " + " ".join(sys.argv), "machine": machine_info(), "size": args.size,
            "shape": {"train": len(ds.train_texts), "labels": len(ds.label_texts),
                      "anchors": {n: len(a.texts) for n, a in ds.anchor_sets.items()}},
            "config": cfg.to_dict(), "interrupted_at_step": at, "steps": len(records(full, "step")),
            "same": {**same, "weights": weights_hash(full_model) == weights_hash(part_model)},
            "weights": [weights_hash(full_model), weights_hash(part_model)],
            "prune": records(full, "prune"), "full_run_s": full_s, "resumed_part_s": resume_s,
        }
    print(json.dumps({k: result[k] for k in ("size", "steps", "interrupted_at_step", "same", "weights")}))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    if not all(result["same"].values()):
        raise SystemExit("the resumed run differs from the uninterrupted one")


if __name__ == "__main__":
    main()
