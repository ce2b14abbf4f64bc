"""What `Model.load`'s weight check costs: the encoder fingerprint (a SHA-256 of its spec and every
weight, compared with model.json's) beside the whole load, for the built-in all-MiniLM-L6-v2 with a
saved label index (the synthetic benchmark's "small" labels). Files are in the page cache.

    HF_HUB_OFFLINE=1 PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/model_load_cost.py \
        --json benchmarks/results/model-load-cost.json
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from ramen.bench.common import best_time, machine_info, report_json
from ramen.datasets.synthetic import synthetic
from ramen.encoder import Encoder
from ramen.model import Model



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None, help="also write the result here")
    args = parser.parse_args()
    model = Model(Encoder("all-MiniLM-L6-v2"), synthetic("small").label_texts)
    model.build_index(progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model"
        model.save(path)
        weights_mb = sum(f.stat().st_size for f in (path / "encoder").rglob("*.safetensors")) / 1e6
        loaded = Model.load(path)  # warms the page cache
        load_s = best_time(lambda: Model.load(path))
        fingerprint_s = best_time(loaded.encoder.fingerprint)
    out = {
        "command": "python benchmarks/model_load_cost.py",
        "encoder": "all-MiniLM-L6-v2", "weights_mb": round(weights_mb, 1), "labels": len(model.label_texts),
        "model_load_s": round(load_s, 3),
        "fingerprint_s": round(fingerprint_s, 3),
        "ratio fingerprint / load": round(fingerprint_s / load_s, 3),
        "machine": machine_info(),
    }
    report_json(out, args.json)


if __name__ == "__main__":
    main()
