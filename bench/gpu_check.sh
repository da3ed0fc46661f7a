#!/usr/bin/env bash
# Everything a session with a GPU runs (device time is scarce), in stages that each fit one device
# call: rebuild from source, the cuda-marked tests, compute-sanitizer over the op tests, the distance
# benchmark (kNN tiers up to N = 1M), the other GPU benchmarks. The benchmarks write the committed
# results (--out bench/results, deliberately); logs and a copy of the results go to
# ${OUT:-bench/results/gpu}. Commit the results with the device name they record.
#   TORCH_CUDA_ARCH_LIST=9.0 bash bench/gpu_check.sh [build] [test] [sanitize] [distance] [bench]
# With no stage named, all run in that order.
set -uo pipefail
out=${OUT:-bench/results/gpu}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16}
stages=${*:-build test sanitize distance bench}
for stage in $stages; do
  echo "== $stage"
  case $stage in
    build)
      python3 -m pip install --no-build-isolation --no-deps --no-index -e . > "$out/build.log" 2>&1 \
        || { tail -30 "$out/build.log"; exit 1; }
      python3 -m uvireid_ext info | tee "$out/info.txt" ;;
    test)
      python3 -m pytest python_tests -m cuda -q -x 2>&1 | tee "$out/tests_cuda.log" | tail -5
      python3 -m pytest python_tests -q 2>&1 | tail -2 | tee -a "$out/tests_cuda.log" ;;
    sanitize)
      for t in distance dbscan kmeans memory_ops mmd_op; do
        compute-sanitizer --tool memcheck --error-exitcode 1 python3 -m pytest "python_tests/test_$t.py" -m cuda -q -x \
          > "$out/sanitizer_$t.log" 2>&1
        echo "compute-sanitizer $t: rc=$?" | tee -a "$out/sanitizer.txt"
      done ;;
    distance)
      python3 bench/bench_distance.py --device cuda --sizes 34000,100000,200000,1000000 --candidates bf16,fp64 \
        --no-baseline --out bench/results 2>&1 | tee "$out/bench_distance.log" | tail -12
      cp bench/results/distance_cuda.* "$out/" ;;
    bench)
      for b in cluster memory mmd eval; do python3 "bench/bench_$b.py" --device cuda --out bench/results 2>&1 | tail -8; done
      cp bench/results/*_cuda.* "$out/" 2>/dev/null ;;
    *) echo "unknown stage $stage (build, test, sanitize, distance, bench)"; exit 2 ;;
  esac
done
