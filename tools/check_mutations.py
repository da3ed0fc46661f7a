"""Mutation check of the emulated-CUDA tests: seed known kernel bugs, one at a time, into a copy of
csrc/, build the emulated op library from the copy (tools/build_emulated.py) and require that the
`cuda` twins of the op tests fail on each. Exit 0 only when every mutant is caught.

    python tools/check_mutations.py [--only NAME]

Each mutant names the runs meant to catch it: a plain run compares with the references, the reverse
schedule exposes code that silently relies on lanes running in lockstep, AddressSanitizer catches
out-of-bounds accesses that leave the results intact.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(HERE, "tools"))
import build_emulated  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Mutant:
    name: str
    path: str  # relative to the checkout
    old: str  # must occur exactly once
    new: str
    tests: tuple[str, ...]  # pytest arguments: paths, node ids, -k expressions
    schedule: str = "forward"
    sanitize: str | None = None
    expect: str | None = None  # text the failing run must print (the emulator's own diagnosis)


MUTANTS = (
    Mutant(
        "removed barrier: block_sum reads the warps' partials before they are written",
        "csrc/kernels/reduce.cuh",
        "  if (lane == 0) scratch[warp] = v;\n  __syncthreads();\n",
        "  if (lane == 0) scratch[warp] = v;\n",
        ("python_tests/test_ops_registry.py::test_matches_reference", "-k", "memory_update_ or segment_reduce"),
    ),
    Mutant(
        "broken warp sum: the last shuffle step of the shared warp_sum is skipped",
        "csrc/kernels/warp.cuh",
        "for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_down_sync(kFullMask, v, o);",
        "for (int o = kWarp / 2; o > 1; o >>= 1) v += __shfl_down_sync(kFullMask, v, o);",
        ("python_tests/test_ops_registry.py::test_matches_reference", "-k", "knn"),
    ),
    Mutant(
        "out-of-bounds index: dbscan_flag_kernel reads labels[n] and writes flag[n]",
        "csrc/kernels/cluster.cuh",
        "                                   int64_t* flag) {\n"
        "  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;",
        "                                   int64_t* flag) {\n"
        "  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i <= n;",
        ("python_tests/test_ops_registry.py::test_matches_reference", "-k", "dbscan"),
        sanitize="address",
        expect="heap-buffer-overflow",
    ),
    Mutant(
        "divergent shuffle: only half of each warp reduces the k-means centre shift",
        "csrc/kernels/cluster.cuh",
        "      shift = warp_sum(shift);\n",
        "      if (lane < 16) shift = warp_sum(shift);\n",
        ("python_tests/test_ops_registry.py::test_matches_reference", "-k", "segmented_kmeans"),
        expect="no thread can continue",
    ),
    Mutant(
        "removed __syncwarp: encode_weights reads lane 0's last distance before it is written",
        "csrc/kernels/distance_kernels.cuh",
        "    __syncwarp();\n",
        "",
        ("python_tests/test_ops_registry.py::test_matches_reference", "-k", "k_reciprocal_encode"),
        schedule="reverse",
    ),
)


def sanitizer_env(sanitize: str | None) -> dict[str, str]:
    if sanitize is None:
        return {}
    cxx = os.environ.get("CXX", "g++")

    def lib(name: str) -> str:
        return subprocess.run([cxx, f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()

    # As tools/test_cuda_on_cpu.sh: the runtime (and for ASan libstdc++) preloaded into Python.
    return {"LD_PRELOAD": f"{lib('libasan.so')} {lib('libstdc++.so')}",
            "ASAN_OPTIONS": "detect_leaks=0 halt_on_error=1 detect_stack_use_after_return=0"}


def copy_build(baseline: str, work_root: str, out: str) -> None:
    """Seed the mutant's build directory with the baseline objects (their depfiles re-pointed at the
    copy), so only the translation units that see the mutated file are compiled again."""
    if not os.path.isdir(baseline):
        return
    shutil.copytree(baseline, out)
    for name in os.listdir(out):
        if name.endswith(".d"):
            p = os.path.join(out, name)
            with open(p) as f:
                text = f.read().replace(os.path.join(HERE, "csrc"), os.path.join(work_root, "csrc"))
            stat = os.stat(p)
            with open(p, "w") as f:
                f.write(text)
            os.utime(p, (stat.st_atime, stat.st_mtime))


def run_mutant(m: Mutant, python: str, jobs: int) -> tuple[bool, str]:
    with tempfile.TemporaryDirectory(prefix="uvireid-mutant-") as work:
        shutil.copytree(os.path.join(HERE, "csrc"), os.path.join(work, "csrc"))  # keeps mtimes
        path = os.path.join(work, m.path)
        with open(path) as f:
            text = f.read()
        if text.count(m.old) != 1:
            return False, f"the mutation's pattern occurs {text.count(m.old)} times in {m.path} (expected once)"
        with open(path, "w") as f:
            f.write(text.replace(m.old, m.new))
        suffix = f"-{m.sanitize}" if m.sanitize else ""
        out = os.path.join(work, "build")
        copy_build(os.path.join(HERE, "build", "emulated" + suffix), work, out)
        try:
            lib = build_emulated.build(work, out, m.sanitize, jobs)
        except RuntimeError as e:
            return False, f"the mutant does not build:\n{e}"
        env = dict(os.environ, UVIREID_EMULATED_CUDA=lib, UVIREID_EMU_SCHEDULE=m.schedule, **sanitizer_env(m.sanitize))
        cmd = [python, "-m", "pytest", "-x", "-q", "-s", "-m", "cuda", "-p", "no:cacheprovider", *m.tests]
        done = subprocess.run(cmd, cwd=HERE, env=env, capture_output=True, text=True)
        output = done.stdout + done.stderr
        if done.returncode == 0:
            return False, "the tests passed on the mutant"
        if m.expect and m.expect not in output:
            return False, f"the tests failed, but without {m.expect!r}:\n{output[-3000:]}"
        lines = [ln for ln in output.splitlines() if m.expect and m.expect in ln] or output.splitlines()[-1:]
        return True, lines[0][:700]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=None, help="run only the mutants whose name contains this text")
    args = parser.parse_args(argv)
    python = os.environ.get("PYTHON", sys.executable)
    jobs = int(os.environ.get("MAX_JOBS", "2"))
    failures = 0
    for m in MUTANTS:
        if args.only and args.only not in m.name:
            continue
        start = time.time()
        caught, detail = run_mutant(m, python, jobs)
        how = f"schedule {m.schedule}" + (f", {m.sanitize} sanitizer" if m.sanitize else "")
        print(f"{'caught' if caught else 'MISSED'} ({how}, {time.time() - start:.0f} s): {m.name}\n    {detail}",
              flush=True)
        failures += not caught
    if failures:
        print(f"{failures} mutant(s) not caught")
        return 1
    print("every mutant was caught")
    return 0


if __name__ == "__main__":
    sys.exit(main())
