#!/usr/bin/env bash
# On a CUDA machine: build jaxqif with its CUDA library, run the GPU tests, compute-sanitizer
# (memcheck and racecheck) on every kernel variant, and a quick benchmark, in one go.
#   bash scripts/gpu_check.sh [build] [test] [sanitize] [racecheck] [sanitize-jax] [bench]
#                             [bench-full] [profile] [profile-stalls] [rtc] [rtc-bench]
#                             [rtc-suite] [rtc-profile] [call-trace] [build-rtc]
# (default: build test sanitize bench). `sanitize` runs racecheck and memcheck on
# tests/sanitize_harness.cu, `racecheck` only the former (HARNESS_PART=numbers or arrays: half
# of the harness's runs); `sanitize-jax` memcheck through JAX (tests/gpu_sanitize.py);
# `profile` times every kernel of one inference and one training call per benchmark shape
# with Nsight Compute (duration, DRAM bytes, registers) and writes each call's kernel time
# against the floor (kernels.md). The run-time compiled kernels (NVRTC through CuPy): `rtc` checks
# them against the nvcc-built ones (tests/test_rtc.py's GPU test: bit for bit, the cache), `rtc-bench`
# times both side by side (benchmarks/rtc_bench.py), `rtc-suite` rebuilds the package without
# nvcc (hidden from PATH, JAXQIF_CUDA=OFF) and runs the whole GPU test suite through them,
# `rtc-profile` lists both libraries' kernels and their own times under Nsight Compute, and
# `call-trace` traces both libraries' calls with JAX's profiler (benchmarks/call_trace.py: host
# events, kernels and the GPU's idle time between them). `build-rtc` builds as the default
# install does, without nvcc, in place of `build`.
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

if has build-rtc; then
  # The default install instead (no nvcc build, a minute less on a bare machine): the later
  # stages run the run-time compiled kernels, each compiled at its first use.
  step "build without nvcc (run-time compiled kernels)"
  JAXQIF_CUDA=OFF python3 -m pip install --no-build-isolation --no-deps -e . \
    >"$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
  python3 -c "import jaxqif._library as l; print(l.kernel_source('cuda'), l.library_path('cuda'))"
fi

# SpikingJelly 2.0, for the cross-check test and the benchmark's baseline: copy its wheels
# (and loguru, scienceplots) into _carry/wheels, which the device call must carry.
if ls _carry/wheels/spikingjelly-*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/sj _carry/wheels/*.whl \
    && export PYTHONPATH=/tmp/sj${PYTHONPATH:+:$PYTHONPATH}
fi

if has test; then
  step "GPU tests"
  # (GPU_TESTS: the test files or folders to run, default all of tests/)
  python3 -m pytest -q -m gpu -n 12 -p no:cacheprovider ${GPU_TESTS:-tests} 2>&1 \
    | tee "$OUT/gpu_tests.log" | tail -15
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
fi

if has rtc; then
  step "run-time compiled kernels against the nvcc-built ones"
  JAXQIF_CUDA_KERNELS=runtime python3 scripts/rtc_smoke.py 2>&1 | tail -12
  python3 -m pytest -q -s -m gpu -p no:cacheprovider tests/test_rtc.py 2>&1 | tee "$OUT/rtc.log" | tail -6
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
fi

if has rtc-bench; then
  step "run-time compiled and nvcc-built kernels, side by side"
  python3 benchmarks/rtc_bench.py --rounds "${RTC_ROUNDS:-1}" --max-seconds "${RTC_SECONDS:-50}" \
    ${RTC_SHAPES:+--shapes "$RTC_SHAPES"} ${RTC_DTYPES:+--dtypes "$RTC_DTYPES"} \
    --out-dir "$OUT" 2>&1 | tail -45
fi

if has rtc-profile; then
  # Each kernel of one inference and one training call, from each library, alone under Nsight
  # Compute (kernel_profile.py): which kernels each launches, and their own times.
  step "run-time compiled and nvcc-built kernels under Nsight Compute"
  python3 -c "import cupy; print('NVRTC', cupy.cuda.nvrtc.getVersion(), '| driver', cupy.cuda.runtime.driverGetVersion())"
  metrics=$(python3 -c "import sys; sys.path.insert(0, 'benchmarks'); import kernel_profile as k; print(k.METRICS)")
  for kernels in prebuilt runtime; do
    JAXQIF_CUDA_KERNELS=$kernels ncu --clock-control none --profile-from-start off --csv \
      --metrics "$metrics" python3 benchmarks/kernel_profile.py \
      --shapes "${RTC_SHAPES:-256x2^16,1024x2^14}" --dtypes "${RTC_DTYPES:-float32,bfloat16}" \
      >"$OUT/profile_$kernels.csv" 2>&1
    echo "== $kernels (ncu exit code $?)"
    python3 benchmarks/kernel_profile.py --table "$OUT/profile_$kernels.csv" 2>&1 | tail -12
    python3 benchmarks/kernel_profile.py --kernels "$OUT/profile_$kernels.csv"
  done
fi

if has call-trace; then
  step "both libraries' calls under JAX's profiler"
  for kernels in prebuilt runtime; do
    JAXQIF_CUDA_KERNELS=$kernels python3 benchmarks/call_trace.py \
      --shapes "${RTC_SHAPES:-256x2^16,1024x2^14}" --dtypes "${RTC_DTYPES:-bfloat16}" \
      --modes "${TRACE_MODES:-fwd}" 2>&1 | grep -v "^W0000\|^I0000"
  done
fi

if has rtc-suite; then
  step "the GPU tests through the run-time compiled kernels, built without nvcc"
  no_nvcc_path=$(echo "$PATH" | tr ':' '\n' | grep -v cuda | paste -sd:)
  # A clean rebuild: the nvcc-built library must not be left in the package.
  PATH=$no_nvcc_path JAXQIF_CUDA=OFF python3 -m pip install --no-build-isolation --no-deps -e . \
    >"$OUT/rtc_build.log" 2>&1 || { tail -20 "$OUT/rtc_build.log"; exit 1; }
  PATH=$no_nvcc_path python3 -c "import shutil, jaxqif._library as l
assert shutil.which('nvcc') is None and l.kernel_source('cuda') == 'runtime', l.library_path('cuda')
print('nvcc:', shutil.which('nvcc'), '| CUDA kernels:', l.kernel_source('cuda'), l.library_path('cuda'))"
  export JAXQIF_CACHE_DIR=${JAXQIF_CACHE_DIR:-/tmp/jaxqif-cache}
  # Every instance into the cache first, on every CPU (the suite's 12 workers would otherwise
  # each compile what they meet first).
  PATH=$no_nvcc_path python3 -m jaxqif._rtc 2>&1 | tail -2
  start=$SECONDS
  PATH=$no_nvcc_path python3 -m pytest -q -m gpu -n 12 -p no:cacheprovider tests 2>&1 \
    | tee "$OUT/rtc_suite.log" | tail -8
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  echo "GPU suite through the run-time path: $((SECONDS - start)) s"
fi

if has sanitize || has racecheck; then
  # compute-sanitizer crashes (SIGSEGV) inside JAX processes at times (racecheck always), so it
  # runs a harness that launches the kernels directly: every launch plan, dtype, reset mode and
  # surrogate, with and without grad_v_seq. CMake builds it from the library's own kernel objects
  # (target jaxqif_sanitize_harness), for this GPU only, in parallel.
  step "compute-sanitizer on the kernel harness"
  generator=(); command -v ninja >/dev/null && generator=(-G Ninja)
  { cmake -S . -B /tmp/harness ${generator[@]+"${generator[@]}"} -DJAXQIF_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=native \
      && cmake --build /tmp/harness --target jaxqif_sanitize_harness -j "$(nproc)" \
      && cp /tmp/harness/jaxqif_sanitize_harness /tmp/sanitize_harness; } >/tmp/harness_build.log 2>&1 \
    || { tail -20 /tmp/harness_build.log; status=1; }
  tools=(racecheck memcheck); has sanitize || tools=(racecheck)
  # HARNESS_PART=numbers or arrays: half the runs (racecheck over both takes longer than one
  # device call allows: run the halves in two calls)
  part=${HARNESS_PART:-both}
  {
    /tmp/sanitize_harness "$part"
    for tool in "${tools[@]}"; do
      compute-sanitizer --tool "$tool" --error-exitcode 3 /tmp/sanitize_harness "$part"
      echo "compute-sanitizer $tool (harness, $part) exit code: $?"
    done
  } >"$OUT/sanitize.log" 2>&1
  grep -E "harness|ERROR SUMMARY|RACECHECK SUMMARY|exit code" "$OUT/sanitize.log" | tail -8
  for tool in "${tools[@]}"; do
    grep -q "$tool (harness, $part) exit code: 0" "$OUT/sanitize.log" || status=1
  done
fi

if has sanitize-jax; then
  # memcheck through JAX and the FFI handlers (tests/gpu_sanitize.py); one cudaMalloc per
  # buffer, so memcheck sees the true bounds of each array.
  step "compute-sanitizer memcheck through JAX"
  env -u PYTHONPATH XLA_PYTHON_CLIENT_ALLOCATOR=platform compute-sanitizer --tool memcheck \
    --error-exitcode 3 python3 tests/gpu_sanitize.py >"$OUT/sanitize_jax.log" 2>&1
  rc=$?; tail -3 "$OUT/sanitize_jax.log"; echo "compute-sanitizer memcheck (JAX) exit code: $rc"
  [ "$rc" -eq 0 ] || status=1
fi

if has bench; then
  step "quick benchmark"
  python3 benchmarks/bench.py --quick --out-dir "$OUT" 2>&1 | tee "$OUT/bench_quick.log" | tail -40
fi

if has bench-full; then
  step "full benchmark"
  python3 benchmarks/bench.py --examples --out-dir "$OUT" 2>&1 | tee "$OUT/bench.log" | tail -90
fi
if has profile; then
  step "kernel profile (ncu)"
  metrics=$(python3 -c "import sys; sys.path.insert(0, 'benchmarks'); import kernel_profile as k; print(k.METRICS)")
  # (PROFILE_ARRAYS=1: also the calls with per-feature parameters, bench.py's jaxqif-arrays;
  # PROFILE_SHAPES: some of the grid's shapes, e.g. 4x2^23,1024x2^14)
  ncu --clock-control none --profile-from-start off --csv --metrics "$metrics" \
    python3 benchmarks/kernel_profile.py ${PROFILE_ARRAYS:+--arrays} \
    ${PROFILE_SHAPES:+--shapes "$PROFILE_SHAPES"} >"$OUT/profile.csv" 2>&1
  echo "ncu exit code: $?"
  # Kernel times per call against the floor at this session's copy bandwidth (bench-full's, or
  # a quick measurement).
  bench_json="$OUT/bench.json"
  if [ ! -f "$bench_json" ]; then
    python3 benchmarks/bench.py --quick --impls jaxqif --modes fwd --shapes 4x2^23 --no-plot \
      --out-dir /tmp --name bandwidth >/dev/null 2>&1
    bench_json=/tmp/bandwidth.json
  fi
  python3 benchmarks/kernel_profile.py --table "$OUT/profile.csv" --bench "$bench_json" \
    | tee "$OUT/kernels.md"
fi
if has profile-stalls; then
  # Why the long-sequence kernels (latency-bound, few neurons) take the time they do: issue
  # slot use and what stalled warps wait on, per kernel.
  step "kernel stall profile (ncu)"
  ncu --clock-control none --profile-from-start off --csv --page details \
    --section SpeedOfLight --section SchedulerStats --section WarpStateStats --section Occupancy \
    python3 benchmarks/kernel_profile.py --shapes 256x2^16,1024x2^14 >"$OUT/profile_stalls.csv" 2>&1
  echo "ncu exit code: $?"
fi
exit $status
