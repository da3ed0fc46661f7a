"""The build: recorded build info, the import-time version check, the CUDA decision, file layout."""

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

import uvireid_ext
from uvireid_ext._loader import _check_build

ROOT = Path(__file__).resolve().parents[1]


def fake_info(**overrides: object) -> types.SimpleNamespace:
    info = dict(torch_version="2.13.0+cpu", min_torch="2.11", with_cuda=False, cuda_version=None)
    info.update(overrides)
    return types.SimpleNamespace(**info)


def test_build_info_is_recorded_and_ops_load():
    info = uvireid_ext.build_info
    assert uvireid_ext.HAS_OPS
    assert info.torch_version.split("+")[0].split(".")[:1] == torch.__version__.split(".")[:1]
    assert info.with_cuda == (info.cuda_version is not None)
    assert hasattr(torch.ops.uvireid_ext, "jaccard_sparse")


def test_info_command_prints_the_build():
    out = subprocess.run([sys.executable, "-m", "uvireid_ext", "info"], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr
    assert "built with torch" in out.stdout and "ops loaded: True" in out.stdout


def test_cpu_build_on_a_gpu_machine_warns_at_import(monkeypatch):
    from uvireid_ext import _loader

    info = fake_info(reason="torch 2.13.0+cpu is a CPU-only build")
    real_import = _loader.importlib.import_module
    monkeypatch.setattr(_loader.importlib, "import_module",
                        lambda name: info if name == "uvireid_ext._build_info" else real_import(name))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.warns(UserWarning, match=r"built without its CUDA ops \(torch 2.13.0\+cpu is a CPU-only build\).*"
                      r"FORCE_CUDA=1 pip install -v"):
        assert _loader.load()[0]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _loader.load()[0]  # no GPU: nothing to say


def test_mismatched_build_fails_with_rebuild_command(monkeypatch):
    monkeypatch.setattr(torch, "__version__", "2.10.0")
    with pytest.raises(ImportError, match=r"built for torch >= 2.11.*Rebuild from source: pip install --no-build"):
        _check_build(fake_info())
    monkeypatch.setattr(torch, "__version__", "3.0.0")
    with pytest.raises(ImportError, match="built with torch 2.13.0"):
        _check_build(fake_info())
    monkeypatch.setattr(torch, "__version__", "2.12.0")
    _check_build(fake_info())  # the stable ABI: one build serves 2.11 and later 2.x
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(ImportError, match="built with CUDA 13.0.*has CUDA None"):
        _check_build(fake_info(with_cuda=True, cuda_version="13.0"))


@pytest.mark.skipif(torch.version.cuda is not None, reason="checks the message given with a CPU-only torch")
def test_force_cuda_with_cpu_torch_stops_with_a_message():
    env = dict(os.environ, FORCE_CUDA="1")
    out = subprocess.run([sys.executable, "setup.py", "--version"], capture_output=True, text=True, cwd=ROOT, env=env)
    assert out.returncode != 0
    assert "FORCE_CUDA=1 but torch" in out.stderr and "CPU-only build" in out.stderr


def test_source_file_stems_are_unique():
    # objects of a .cpp and a .cu with one stem would collide in some build layouts
    stems = [p.stem for p in (ROOT / "csrc").rglob("*") if p.suffix in (".cpp", ".cu")]
    assert len(stems) == len(set(stems))


def test_backend_files_follow_one_stem_rule():
    # csrc/cpu/<family>_cpu.cpp and csrc/cuda/<family>_cuda.cu, one per family and backend: every
    # family has both backends
    cpu = {p.stem.removesuffix("_cpu") for p in (ROOT / "csrc" / "cpu").glob("*.cpp")}
    cuda = {p.stem.removesuffix("_cuda") for p in (ROOT / "csrc" / "cuda").glob("*.cu")}
    assert all(p.stem.endswith("_cpu") for p in (ROOT / "csrc" / "cpu").glob("*.cpp"))
    assert all(p.stem.endswith("_cuda") for p in (ROOT / "csrc" / "cuda").glob("*.cu"))
    assert cpu == cuda == {"cluster", "distance", "memory", "mmd"}


def test_kernels_know_nothing_of_torch():
    for header in (ROOT / "csrc" / "kernels").glob("*"):
        text = header.read_text()
        assert "#include <torch" not in text and "#include <ATen" not in text, header.name
