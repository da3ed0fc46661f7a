"""Build the emulated-CUDA op library: the CUDA launchers and kernels (csrc/cuda, csrc/kernels)
compiled with the C++ compiler against the SIMT emulator of csrc/emulation, registered for CPU
tensors. Test-only (tools/test_cuda_on_cpu.sh loads it in place of uvireid_ext._C).

    python tools/build_emulated.py [--source DIR] [--out DIR] [--sanitize thread|address]

Prints the path of the built library. Objects are reused while none of their inputs changed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import glob
import os
import shlex
import subprocess
import sys

from torch.utils.cpp_extension import include_paths, library_paths

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCH_TARGET_VERSION = "0x020b000000000000"  # as setup.py: the stable ABI of torch 2.11


def sources(root: str) -> list[str]:
    found = [os.path.join(root, "csrc", "ops.cpp"), os.path.join(root, "csrc", "emulation", "simt.cpp")]
    for pattern in ("csrc/cpu/*.cpp", "csrc/cuda/*.cu"):
        found += sorted(glob.glob(os.path.join(root, pattern)))
    return found


def compile_flags(root: str, sanitize: str | None) -> list[str]:
    flags = ["-std=c++20", "-fPIC", "-O2", "-g", "-fno-omit-frame-pointer", "-fopenmp-simd", "-Wall", "-Werror",
             "-Wno-unused-function", f"-DTORCH_TARGET_VERSION={TORCH_TARGET_VERSION}", "-DUVIREID_EMULATION"]
    # The emulator's directory first: its cuda_runtime.h and cub/ stand in for the CUDA toolkit's.
    flags += ["-I" + os.path.join(root, "csrc", "emulation"), "-I" + os.path.join(root, "csrc")]
    flags += ["-isystem" + p for p in include_paths()]
    if sanitize:
        flags.append(f"-fsanitize={sanitize}")
    return flags


def up_to_date(obj: str, dep: str) -> bool:
    """Whether obj is newer than every input listed in its make-style dependency file."""
    if not (os.path.exists(obj) and os.path.exists(dep)):
        return False
    with open(dep) as f:
        text = f.read().replace("\\\n", " ")
    inputs = shlex.split(text.split(":", 1)[1]) if ":" in text else []
    built = os.path.getmtime(obj)
    return all(os.path.exists(p) and os.path.getmtime(p) <= built for p in inputs)


def compile_one(cxx: str, src: str, out_dir: str, flags: list[str], sanitize: str | None) -> str:
    name = os.path.basename(src).replace(".", "_") + ".o"
    obj, dep = os.path.join(out_dir, name), os.path.join(out_dir, name + ".d")
    if up_to_date(obj, dep):
        return obj
    extra = ["-x", "c++"] if src.endswith(".cu") else []
    if sanitize == "thread" and src.endswith("simt.cpp"):
        # The scheduler's own bookkeeping crosses fibers without sanitizer-visible ordering on purpose:
        # it is the thing that orders them. It tells ThreadSanitizer the CUDA ordering instead.
        extra += ["-fno-sanitize=thread", "-DUVIREID_EMU_TSAN=1"]
    cmd = [cxx, *flags, *extra, "-MMD", "-MF", dep, "-c", src, "-o", obj]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"compiling {src} failed:\n{' '.join(cmd)}\n{done.stdout}{done.stderr}")
    return obj


def build(root: str, out_dir: str, sanitize: str | None, jobs: int) -> str:
    os.makedirs(out_dir, exist_ok=True)
    cxx = os.environ.get("CXX", "g++")
    flags = compile_flags(root, sanitize)
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        objs = list(pool.map(lambda s: compile_one(cxx, s, out_dir, flags, sanitize), sources(root)))
    lib = os.path.join(out_dir, "libuvireid_ext_emulated.so")
    link = [cxx, "-shared", "-o", lib, *objs]
    if sanitize:
        link.append(f"-fsanitize={sanitize}")
    for p in library_paths():
        link += ["-L" + p, "-Wl,-rpath," + p]
    link += ["-lc10", "-ltorch_cpu", "-ltorch"]
    done = subprocess.run(link, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"linking {lib} failed:\n{' '.join(link)}\n{done.stdout}{done.stderr}")
    return lib


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default=HERE, help="checkout whose csrc/ to build (default: this one)")
    parser.add_argument("--out", default=None, help="build directory (default: SOURCE/build/emulated[-SANITIZER])")
    parser.add_argument("--sanitize", choices=["thread", "address"], default=None)
    args = parser.parse_args(argv)
    out = args.out or os.path.join(args.source, "build", "emulated" + (f"-{args.sanitize}" if args.sanitize else ""))
    jobs = int(os.environ.get("MAX_JOBS", "2"))
    try:
        print(build(os.path.abspath(args.source), os.path.abspath(out), args.sanitize, jobs))
    except RuntimeError as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
