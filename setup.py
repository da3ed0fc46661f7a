"""Build uvireid_ext._C: CPU ops always, CUDA ops when torch is a CUDA build and nvcc is found.

Environment:
    FORCE_CPU=1             build the CPU ops only, even with a CUDA torch.
    FORCE_CUDA=1            require the CUDA ops; stops with a message if torch has no CUDA or nvcc is missing.
    TORCH_CUDA_ARCH_LIST    e.g. "9.0" for H100/H200; defaults to "8.0;9.0" when no GPU is visible.
    DEBUG=1                 -O0 -g instead of -O3 -g0.
    NVCC_FLAGS              extra flags appended to nvcc's.
    MAX_JOBS                parallel compile jobs (ninja); defaults to the CPU count.

The op glue uses torch's stable ABI (torch/csrc/stable, target 2.11), so one build serves torch
2.11 through 2.13, and the CUDA glue compiles against a CPU-only torch for the CI compile check.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys

import torch
from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

HERE = os.path.dirname(os.path.abspath(__file__))
TORCH_TARGET_VERSION = "0x020b000000000000"  # torch 2.11: the oldest torch this build must load into
MIN_TORCH = "2.11"


def env_flag(name: str) -> bool:
    return os.getenv(name, "0").lower() in ("1", "true", "yes", "on")


def find_nvcc() -> str | None:
    # torch's CUDA_HOME is None whenever torch is a CPU build, so look for nvcc ourselves.
    for root in (os.getenv("CUDA_HOME"), os.getenv("CUDA_PATH"), "/usr/local/cuda"):
        if root and os.path.exists(os.path.join(root, "bin", "nvcc")):
            return os.path.join(root, "bin", "nvcc")
    return shutil.which("nvcc")


def nvcc_version(nvcc: str | None) -> str | None:
    if nvcc is None:
        return None
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    for token in out.replace(",", " ").split():
        if token.startswith("V") and token[1:2].isdigit():
            return token[1:]
    return None


def decide() -> tuple[bool, str]:
    nvcc = find_nvcc()
    if env_flag("FORCE_CPU"):
        return False, "FORCE_CPU=1"
    if env_flag("FORCE_CUDA"):
        if torch.version.cuda is None:
            sys.exit(
                f"uvireid_ext: FORCE_CUDA=1 but torch {torch.__version__} is a CPU-only build. "
                "Install a CUDA build of torch first, or unset FORCE_CUDA for a CPU-only build."
            )
        if nvcc is None:
            sys.exit("uvireid_ext: FORCE_CUDA=1 but nvcc was not found (set CUDA_HOME or put nvcc on PATH).")
        return True, "FORCE_CUDA=1"
    if torch.version.cuda is None:
        return False, f"torch {torch.__version__} is a CPU-only build"
    if nvcc is None:
        return False, f"torch has CUDA {torch.version.cuda} but nvcc was not found"
    return True, f"torch has CUDA {torch.version.cuda} and nvcc is at {nvcc}"


WITH_CUDA, REASON = decide()
DEBUG = env_flag("DEBUG")
os.environ.setdefault("MAX_JOBS", str(os.cpu_count() or 1))
if WITH_CUDA and not os.getenv("TORCH_CUDA_ARCH_LIST"):
    if torch.cuda.is_available():
        cap = torch.cuda.get_device_capability()
        os.environ["TORCH_CUDA_ARCH_LIST"] = f"{cap[0]}.{cap[1]}"
    else:  # no GPU visible: torch's own arch detection would crash, so choose Ampere + Hopper
        os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0"
ARCH_LIST = os.getenv("TORCH_CUDA_ARCH_LIST", "") if WITH_CUDA else ""
NVCC = find_nvcc() if WITH_CUDA else None

print(
    f"uvireid_ext build: {'CUDA + CPU' if WITH_CUDA else 'CPU only'} ({REASON}); torch {torch.__version__}; "
    f"arch list {ARCH_LIST or '-'}; DEBUG={int(DEBUG)}; MAX_JOBS={os.environ['MAX_JOBS']}",
    flush=True,
)

define = [f"-DTORCH_TARGET_VERSION={TORCH_TARGET_VERSION}", "-DPy_LIMITED_API=0x030A0000", "-DUVIREID_PYTHON_MODULE"]
opt = ["-O0", "-g"] if DEBUG else ["-O3", "-g0"]
# -ffp-contract=off: the AVX-512 clones of the CPU kernels give the bits of the others (no fused
# multiply-adds).
cxx_flags = define + opt + ["-fopenmp-simd", "-ffp-contract=off"]
sources = sorted(glob.glob("csrc/*.cpp")) + sorted(glob.glob("csrc/cpu/*.cpp"))
ext_kwargs: dict = {
    "include_dirs": [os.path.join(HERE, "csrc")],
    "py_limited_api": True,
}
if WITH_CUDA:
    sources += sorted(glob.glob("csrc/cuda/*.cu"))
    nvcc_flags = define + opt + ["-DUSE_CUDA", "--expt-relaxed-constexpr", "-lineinfo"]
    nvcc_flags += os.getenv("NVCC_FLAGS", "").split()
    ext = CUDAExtension(
        "uvireid_ext._C",
        sources,
        extra_compile_args={"cxx": cxx_flags + ["-DUSE_CUDA"], "nvcc": nvcc_flags},
        **ext_kwargs,
    )
else:
    ext = CppExtension("uvireid_ext._C", sources, extra_compile_args={"cxx": cxx_flags}, **ext_kwargs)

with open(os.path.join(HERE, "uvireid_ext", "_build_info.py"), "w") as f:
    f.write(
        "# Written by setup.py at build time; records what this build of uvireid_ext._C was made for.\n"
        f"torch_version = {torch.__version__!r}\n"
        f"min_torch = {MIN_TORCH!r}\n"
        f"with_cuda = {WITH_CUDA}\n"
        f"cuda_version = {(torch.version.cuda if WITH_CUDA else None)!r}\n"
        f"nvcc_version = {nvcc_version(NVCC)!r}\n"
        f"arch_list = {ARCH_LIST!r}\n"
        f"reason = {REASON!r}\n"
        f"debug = {DEBUG}\n"
    )

setup(
    ext_modules=[ext],
    cmdclass={"build_ext": BuildExtension.with_options(no_python_abi_suffix=True)},
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)
