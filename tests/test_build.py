"""The compiled extension loads and reports its build options."""
from ramen import _C


def test_extension_loads() -> None:
    assert isinstance(_C.has_cuda(), bool)
    assert _C.hardware_threads() >= 1


def test_kernels_a_run_reports_per_device(monkeypatch) -> None:
    import types

    import torch

    from ramen import ops

    assert ops.kernels_for(torch.device("cpu")) == "C++ (CPU)"
    monkeypatch.setattr(ops, "load_C", lambda: types.SimpleNamespace(has_cuda=lambda: False))
    assert "RAMEN_CUDA=ON pip install ." in ops.kernels_for(torch.device("cuda", 0))
    monkeypatch.setattr(ops, "load_C", lambda: types.SimpleNamespace(has_cuda=lambda: True))
    assert ops.kernels_for(torch.device("cuda", 0)) == "CUDA"


def test_ramen_cuda_on_without_nvcc_fails_the_build_clearly(tmp_path) -> None:
    """`RAMEN_CUDA=ON pip install .` on a machine without nvcc stops at CMake's configure step with
    a message saying so (checked by configuring the source tree with nvcc off the PATH)."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import pytest

    root = Path(__file__).resolve().parents[1]
    cmake = shutil.which("cmake")
    if cmake is None or not (root / "CMakeLists.txt").exists():
        pytest.skip("needs cmake and the source tree")
    pybind11 = subprocess.run([sys.executable, "-m", "pybind11", "--cmakedir"], capture_output=True, text=True)
    if pybind11.returncode:
        pytest.skip("needs pybind11's CMake files")
    env = {k: v for k, v in os.environ.items() if k not in ("CUDACXX", "CUDA_PATH", "CUDA_HOME")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not (Path(p) / "nvcc").exists())
    env["PATH"] = os.pathsep.join([str(Path(cmake).parent), env["PATH"]])
    out = subprocess.run([cmake, "-S", str(root), "-B", str(tmp_path), "-DRAMEN_CUDA=ON",
                          f"-Dpybind11_DIR={pybind11.stdout.strip()}", f"-DPython_EXECUTABLE={sys.executable}"],
                         capture_output=True, text=True, env=env)
    assert out.returncode != 0
    assert "RAMEN_CUDA=ON but CMake found no CUDA compiler" in out.stderr


def test_the_stub_lists_what_the_extension_has() -> None:
    """src/ramen/_C.pyi (shipped for editors) names every function of the built module; regenerate
    it with pybind11-stubgen when a binding changes."""
    import re
    from pathlib import Path

    import ramen

    stub = (Path(ramen.__file__).parent / "_C.pyi").read_text()
    listed = set(re.search(r"__all__: list\[str\] = \[(.*?)\]", stub).group(1).replace("'", "").replace(" ", "").split(","))
    built = {name for name in dir(_C) if not name.startswith("_") and callable(getattr(_C, name))}
    cuda_only = {"triplet_mine_cuda", "triplet_cuda_max_cols"}
    assert built - cuda_only <= listed <= built | cuda_only
    assert (listed - built) <= cuda_only and (_C.has_cuda() or not cuda_only & built)
