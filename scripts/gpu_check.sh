#!/usr/bin/env bash
# On a CUDA machine: build jaxqif with its CUDA library, run the GPU tests, compute-sanitizer
# (memcheck and racecheck) on every kernel variant, and a quick benchmark, in one go.
#   bash scripts/gpu_check.sh [build] [test] [sanitize] [bench] [bench-full]   (default: the first four)
# Logs and results go to $OUT (default ./gpu-results): at most 7 files, as few come back from a
# leased machine.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
# Several test processes share the GPU: allocate on demand instead of preallocating 75%.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(build test sanitize bench)
status=0
has() { [[ " ${stages[*]} " == *" $1 "* ]]; }
step() { echo; echo "=== $* ($(date -u +%H:%M:%S))"; }

if has build; then
  step build
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/build.log"
  JAXQIF_CUDA=ON python3 -m pip install --no-build-isolation --no-deps -v -e . >>"$OUT/build.log" 2>&1 \
    || { tail -40 "$OUT/build.log"; exit 1; }
  grep -E "registers|spill" "$OUT/build.log" | sort | uniq -c | sort -rn | head -5
  python3 -c "import jax, jaxqif._library as l; print(jax.__version__, jax.devices(), l.available_platforms())"
fi

# SpikingJelly 2.0, for the cross-check test and the benchmark's baseline: copy its wheels
# (and loguru, scienceplots) into _carry/wheels, which the device call must carry.
if ls _carry/wheels/spikingjelly-*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/sj _carry/wheels/*.whl \
    && export PYTHONPATH=/tmp/sj${PYTHONPATH:+:$PYTHONPATH}
fi

if has test; then
  step "GPU tests"
  python3 -m pytest -q -m gpu -n 8 -p no:cacheprovider tests 2>&1 | tee "$OUT/gpu_tests.log" | tail -15
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
fi

if has sanitize; then
  # One cudaMalloc per buffer, so memcheck sees the true bounds of each array.
  for tool in memcheck racecheck; do
    step "compute-sanitizer $tool"
    workload=(); [ "$tool" = racecheck ] && workload=(--small)
    env -u PYTHONPATH XLA_PYTHON_CLIENT_ALLOCATOR=platform compute-sanitizer --tool "$tool" --error-exitcode 3 \
      python3 tests/gpu_sanitize.py "${workload[@]}" >"$OUT/sanitize_$tool.log" 2>&1
    rc=$?
    tail -4 "$OUT/sanitize_$tool.log"
    cat "$OUT/sanitize_$tool.log" >>"$OUT/sanitize.log" && rm "$OUT/sanitize_$tool.log"
    echo "compute-sanitizer $tool exit code: $rc"
    [ "$rc" -eq 0 ] || status=1
  done
fi

if has bench; then
  step "quick benchmark"
  python3 benchmarks/bench.py --quick --out-dir "$OUT" 2>&1 | tee "$OUT/bench_quick.log" | tail -40
fi

if has bench-full; then
  step "full benchmark"
  python3 benchmarks/bench.py --out-dir "$OUT" 2>&1 | tee "$OUT/bench.log" | tail -80
fi
exit $status
