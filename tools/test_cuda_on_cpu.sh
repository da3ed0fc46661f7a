#!/usr/bin/env bash
# Run the CUDA launchers and kernels on the CPU: build the emulated-CUDA op library from this
# checkout (tools/build_emulated.py, csrc/emulation) and run the `cuda` twins of the op tests
# against it, once per thread schedule (forward, reverse, random order within each block).
# Exit 0 only when every run passes. Needs the README's set-up (.venv with the package installed).
#
#   tools/test_cuda_on_cpu.sh [--schedule forward|reverse|random] [--sanitize] [--mutations] [pytest args...]
#
# --schedule: only that schedule (default: all three). --mutations: then seed known kernel bugs
# and require each to be caught (tools/check_mutations.py). --sanitize: the same runs under
# ThreadSanitizer and then AddressSanitizer instead (slower; DBSCAN's union-find races on purpose,
# see csrc/kernels/cluster.cuh, and is suppressed in tools/tsan.supp). See the README's development
# section for what the emulation can and cannot find.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
export MAX_JOBS=${MAX_JOBS:-2}

schedules=(forward reverse random)
sanitize=0
mutations=0
pytest_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --schedule) schedules=("$2"); shift 2 ;;
    --sanitize) sanitize=1; shift ;;
    --mutations) mutations=1; shift ;;
    *) pytest_args+=("$1"); shift ;;
  esac
done

tests=(python_tests/test_ops_registry.py python_tests/test_ops_distance.py python_tests/test_ops_dbscan.py
       python_tests/test_ops_kmeans.py python_tests/test_cluster.py python_tests/test_ops_memory.py
       python_tests/test_ops_mmd.py)

# run_twins LIBRARY [env assignments...]: the `cuda` tests against LIBRARY under every schedule.
run_twins() {
  local lib=$1
  shift
  for schedule in "${schedules[@]}"; do
    echo "== emulated CUDA twins: schedule $schedule${1:+ ($*)}"
    env "$@" UVIREID_EMULATED_CUDA="$lib" UVIREID_EMU_SCHEDULE="$schedule" UVIREID_EMU_SEED="${UVIREID_EMU_SEED:-1}" \
      "$PYTHON" -m pytest -q -m cuda -p no:cacheprovider $capture "${tests[@]}" ${pytest_args[@]+"${pytest_args[@]}"}
  done
}

capture=""
if [[ $sanitize == 0 ]]; then
  lib=$("$PYTHON" tools/build_emulated.py)
  run_twins "$lib"
else
  cxx=${CXX:-g++}
  capture="-s"  # a sanitizer report ends the process: let it reach the terminal, not pytest's capture
  lib=$("$PYTHON" tools/build_emulated.py --sanitize thread)
  # Python and torch are not instrumented: the runtime has to come first. halt_on_error makes a race fail the run.
  # OMP_NUM_THREADS=1: torch's OpenMP runtime is not instrumented, its own barriers would look like races.
  run_twins "$lib" OMP_NUM_THREADS=1 LD_PRELOAD="$($cxx -print-file-name=libtsan.so)" \
    TSAN_OPTIONS="suppressions=$PWD/tools/tsan.supp halt_on_error=1 exitcode=66 report_signal_unsafe=0"
  lib=$("$PYTHON" tools/build_emulated.py --sanitize address)
  # libstdc++ preloaded too: AddressSanitizer's exception interceptors need it present at start-up.
  run_twins "$lib" LD_PRELOAD="$($cxx -print-file-name=libasan.so) $($cxx -print-file-name=libstdc++.so)" \
    ASAN_OPTIONS="detect_leaks=0 halt_on_error=1 detect_stack_use_after_return=0"
fi
if [[ $mutations == 1 ]]; then
  echo "== mutation check"
  PYTHON="$PYTHON" "$PYTHON" tools/check_mutations.py
fi
echo "emulated CUDA: all runs passed"
