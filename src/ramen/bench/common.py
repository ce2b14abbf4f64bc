"""Shared benchmark machinery: machine description, timing, peak memory, result rows."""
from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


@dataclasses.dataclass
class Row:
    """One measurement: ours beside the peer's, with ratio = ours / peer in `unit`.

    For throughput units (higher is better) a ratio above 1 means we are faster; for times
    (lower is better) a ratio below 1 does. `better` says which.
    """

    suite: str
    case: str
    metric: str
    ours: float
    peer: float | None = None
    peer_name: str = ""
    unit: str = ""
    better: str = "higher"  # "higher" or "lower"
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.peer is None or self.peer == 0:
            return None
        return self.ours / self.peer

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["ratio"] = self.ratio
        return d


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """CPU model, cores, GPU and library versions, printed beside every result."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    for name in ("numpy", "scipy", "torch", "transformers", "numba", "usearch", "faiss", "hnswlib"):
        try:
            module = __import__(name)
            info[name] = getattr(module, "__version__", "?")
        except Exception:  # noqa: BLE001 - a missing or broken peer is reported, not fatal
            continue
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001
        pass
    try:
        from ramen._build import load_C
        _C = load_C()

        info["ramen_cuda_build"] = _C.has_cuda()
    except ImportError:
        pass
    return info


def report_json(result: dict[str, Any], path: str | os.PathLike | None = None) -> None:
    """Prints `result` as JSON, first written to `path` when given (by a temporary name and a rename,
    so a stopped run leaves no half-written record)."""
    import json

    from ramen.files import temp_path

    text = json.dumps(result, indent=1)
    if path is not None:
        tmp = temp_path(path)
        tmp.write_text(text + "\n")
        os.replace(tmp, path)
    print(text)


def best_time(fn: Callable[[], Any], repeat: int = 3) -> float:
    """Least wall time of `fn` in seconds over `repeat` runs: the figure least disturbed by other
    jobs on a shared machine (the page cache warmed by the caller)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def timeit(fn: Callable[[], Any], *, repeat: int = 5, warmup: int = 1, sync: Callable[[], None] | None = None) -> float:
    """Median wall time of `fn` in seconds over `repeat` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
        if sync:
            sync()
    times = []
    for _ in range(repeat):
        if sync:
            sync()
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _status_kb(field: str) -> int | None:
    """A field of /proc/self/status in bytes (VmRSS, VmHWM), or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Resets the kernel's peak resident-set figure (VmHWM) of this process to its current RSS
    (Linux >= 4.0: writing 5 to /proc/self/clear_refs); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_kb("VmHWM") is not None
    except OSError:
        return False


class StageMemory:
    """The resident memory of one stage of work: RSS at its start, its peak and at its end (bytes).

    The peak is the kernel's VmHWM, reset at the start (`reset_peak_rss`), so it sees every
    allocation however short; where that cannot be reset, a thread samples /proc/self/statm.
    """

    def __init__(self) -> None:
        self.start = self.peak = self.end = 0
        self._sampled = False
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "StageMemory":
        self.start = self.peak = _rss_bytes()
        if not reset_peak_rss():
            self._sampled = True
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(0.002)

    def __exit__(self, *exc: object) -> None:
        self.end = _rss_bytes()
        if self._sampled:
            self._done.set()
            self._thread.join()
            self.peak = max(self.peak, self.end)
        else:
            self.peak = max(_status_kb("VmHWM") or 0, self.end)


def peak_rss_during(fn: Callable[[], Any], interval: float = 0.002) -> tuple[Any, int]:
    """Runs `fn` and returns (its result, peak resident-set growth in bytes above the start).

    Samples /proc/self/statm from a thread: coarse, but it sees C++ allocations that
    tracemalloc cannot.
    """
    start = _rss_bytes()
    peak = start
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_bytes())
            time.sleep(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        result = fn()
    finally:
        done.set()
        thread.join()
    peak = max(peak, _rss_bytes())
    return result, peak - start


def benchmarks_dir() -> Path | None:
    """The source tree's `benchmarks/` folder (the accuracy study and recorded results), when this
    is a checkout; None from an installed wheel."""
    candidates = [Path.cwd() / "benchmarks", Path(__file__).resolve().parents[3] / "benchmarks"]
    for path in candidates:
        if (path / "accuracy.py").is_file():
            return path
    return None


def import_peer(name: str) -> Any:
    """The peer module ramen.bench.peers.<name>; ImportError (with the reason) where the library it
    wraps is not installed (faiss, hnswlib)."""
    import importlib

    try:
        return importlib.import_module(f"ramen.bench.peers.{name}")
    except ImportError as exc:
        raise ImportError(f"peer {name!r} needs a library that is not installed ({exc})") from exc


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if x == 0:
        return "0"
    a = abs(x)
    if a >= 1e6 or a < 1e-3:
        return f"{x:.3e}"
    if a >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def format_rows(rows: list[Row]) -> str:
    """A plain-text table: case, metric, ours, peer, ours/peer."""
    header = ("suite", "case", "metric", "unit", "ours", "peer", "peer value", "ours/peer")
    body = [
        (r.suite, r.case, r.metric, r.unit, _fmt(r.ours), r.peer_name or "-", _fmt(r.peer), _fmt(r.ratio))
        for r in rows
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in body]
    return "\n".join(lines)
