// Launches the CUDA kernels directly, without JAX, for compute-sanitizer (whose racecheck, and at
// times memcheck, crash inside JAX processes). CMake's jaxqif_sanitize_harness target links it
// with the library's own kernel objects (the forward's and each surrogate's backward);
// scripts/gpu_check.sh builds it and runs it under racecheck and memcheck. Covers every launch
// plan, dtype and reset mode of the forward (each choice of the results it writes) and of the
// backward (with and without grad_v_seq, the former also with a
// constant v_init and no grad_v_init): with every surrogate on the layouts with few neurons,
// with one on the large ones. Each of these runs is made twice: with the parameters as numbers
// (the scalar kernels), and with every parameter given as an array (the per-neuron kernels) and
// every parameter gradient asked for, the arrays' length taking turns between 1, a divisor of
// the neuron count (a feature axis) and the neuron count. Exits nonzero on any CUDA error.
//   jaxqif_sanitize_harness [numbers | arrays]   (default: both halves; racecheck over both
//                                                  takes longer than one device call allows)
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "kernels/stream_io.cuh"  // to_state, from_state
#include "launch/backward_launch.h"  // with_surrogate_reset
#include "launch/cuda_launch.h"
#include "launch/cuda_launcher.cuh"  // CudaDType
#include "static_switch.h"

namespace {

using namespace jaxqif;

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(status));
    std::exit(1);
  }
}

void check(const ffi::Error& status, const char* what) {
  if (!status.success()) {
    std::fprintf(stderr, "%s: %s\n", what, status.message().c_str());
    std::exit(1);
  }
}

template <typename T>
__global__ void fill(T* p, int64_t n, float offset, float amplitude) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  using S = decltype(gpu::to_state(T{}));
  if (i < n) p[i] = gpu::from_state<T>(S(offset + amplitude * sinf(0.37f * i)));
}

template <typename T>
T* filled(int64_t n, float offset, float amplitude = 0.8f) {
  T* p = nullptr;
  check(cudaMalloc(&p, n * sizeof(T)), "cudaMalloc");
  fill<<<static_cast<unsigned>((n + 255) / 256), 256>>>(p, n, offset, amplitude);
  return p;
}

// The parameters as arrays of `count` elements of the state type S (a count that divides the
// neuron count), around the numbers the runs use, and every gradient of them (each of `neurons`
// elements): what a v3 call with all six as arrays passes, v_reset only with the hard reset
// (jaxqif refuses it with the soft one).
template <typename S>
struct ParamBuffers {
  ParamArrays arrays;
  ParamGrads grads;
  ParamBuffers(int64_t count, int64_t neurons, bool hard_reset) {
    // tau, v_c, a0, v_threshold, v_rest, v_reset (ParamIndex order)
    const float around[kNumParams] = {2.0f, 0.8f, 1.0f, 1.0f, 0.0f, -0.1f};
    for (int j = 0; j < kNumParams; ++j) {
      if (j == kVReset && !hard_reset) continue;
      arrays.values[j] = filled<S>(count, around[j], 0.05f);
      arrays.wraps[j] = IndexWrap(count);
      grads.values[j] = filled<S>(neurons, 0.0f);
    }
  }
  ParamBuffers(const ParamBuffers&) = delete;
  ParamBuffers& operator=(const ParamBuffers&) = delete;
  ~ParamBuffers() {
    for (int j = 0; j < kNumParams; ++j) {
      check(cudaFree(const_cast<void*>(arrays.values[j])), "cudaFree");
      check(cudaFree(grads.values[j]), "cudaFree");
    }
  }
};

// One forward and backward run of the input dtype D (CudaDType); param_count 0: the parameters
// as numbers, else as arrays of that many elements (ParamBuffers).
template <typename D>
void run(const Layout& l, bool hard_reset, bool grad_v_seq, int64_t surrogate,
         int64_t param_count) {
  using X = typename D::Input;
  using S = typename D::State;
  const ffi::DataType dtype = D::kDType;
  const int64_t e = l.elements(), n = l.neurons();
  X* x = filled<X>(e, 0.4f);
  S* v_init = filled<S>(n, 0.0f);
  X* spikes = filled<X>(e, 0.0f);
  S* v_final = filled<S>(n, 0.0f);
  S* v_seq = filled<S>(e, 0.0f);
  // The checkpoints exactly as large as the handlers check them to be (none for one interval).
  const int64_t saved = checkpoint_count(l.steps, checkpoint_interval(sizeof(X))) * l.inner *
                        l.outer;
  S* checkpoints = saved ? filled<S>(saved, 0.0f) : nullptr;
  X* grad_spikes = filled<X>(e, 0.1f);
  S* grad_v = filled<S>(e, 0.1f);
  S* grad_v_final = filled<S>(n, 0.1f);
  X* grad_x = filled<X>(e, 0.0f);
  S* grad_v_init = filled<S>(n, 0.0f);
  const double v_reset = hard_reset ? -0.1 : 0.0;
  // grad_v_seq runs also start from the constant v_init_value and skip grad_v_init.
  const void* start = grad_v_seq ? nullptr : v_init;
  const NeuronSettings neuron{.time_axis = 1,
                              .tau = 2.0,
                              .v_c = 0.8,
                              .a0 = 1.0,
                              .v_threshold = 1.0,
                              .v_rest = 0.0,
                              .v_reset = v_reset,
                              .hard_reset = hard_reset,
                              .v_init_value = v_reset,
                              .checkpoint_steps = checkpoint_interval(sizeof(X))};
  // (filled on the default stream before the kernels, freed after the synchronization below)
  std::optional<ParamBuffers<S>> params;
  if (param_count) params.emplace(param_count, n, hard_reset);
  const ParamArrays arrays = params ? params->arrays : ParamArrays{};
  const ParamGrads param_grads = params ? params->grads : ParamGrads{};
  ForwardCall forward{{}, l, dtype, neuron, arrays};
  // Every store variant of the forward kernel: inference (spikes only), training (and the
  // checkpoints), V alone, then everything; the backward reads the checkpoints.
  const ForwardPointers variants[] = {{x, start, spikes, nullptr, nullptr, nullptr},
                                           {x, start, spikes, v_final, nullptr, checkpoints},
                                           {x, start, spikes, nullptr, v_seq, nullptr},
                                           {x, start, spikes, v_final, v_seq, checkpoints}};
  for (const ForwardPointers& pointers : variants) {
    forward.ptr = pointers;
    check(gpu::cuda_launch_forward(forward, nullptr), "forward launch");
  }
  const BackwardCall backward{
      {grad_spikes, grad_v_seq ? grad_v : nullptr, grad_v_final, x, checkpoints,
       grad_v_seq ? nullptr : v_init, grad_x, grad_v_seq ? nullptr : grad_v_init},
      l,
      dtype,
      {.neuron = neuron, .detach_reset = false, .surrogate = surrogate, .alpha = 4.0},
      arrays,
      param_grads};
  check(gpu::with_surrogate_reset(backward, [&]<SurrogateKind kKind, bool kHardReset>() {
          return gpu::cuda_launch_backward<kKind, kHardReset>(backward, nullptr);
        }),
        "backward launch");
  check(cudaDeviceSynchronize(), "kernels");
  for (void* p : std::vector<void*>{x, v_init, spikes, v_final, v_seq, checkpoints, grad_spikes,
                                    grad_v, grad_v_final, grad_x, grad_v_init}) {
    check(cudaFree(p), "cudaFree");
  }
}

}  // namespace

int main(int argc, char** argv) {
  const std::string part = argc > 1 ? argv[1] : "both";
  if (part != "both" && part != "numbers" && part != "arrays") {
    std::fprintf(stderr, "usage: %s [numbers | arrays]\n", argv[0]);
    return 2;
  }
  const bool numbers = part != "arrays", arrays = part != "numbers";
  // {outer, steps, inner}: few neurons (forward: bulk deep where rows are whole 16-byte
  // units, else staged deep; backward: segmented, 16 warps per 32 groups, the last block part
  // empty; odd inner: 16-bit types take the narrow long plan), one step, whole rounds (128 steps
  // of float32), the ring wrapping around, a partial last box of neurons and of steps in two
  // rows, bulk shallow and 3 or 6 segments; then staged shallow (more blocks than the bulk plan
  // holds resident), narrow, wide and wide short (with parameter arrays these two take the
  // narrow plan: launch/plan.h, per_neuron_plan). Step counts from 1 to 520 cover one
  // checkpoint interval, a partial last one (11, 21, 5, 70, 9) and whole ones (128, 520).
  const Layout layouts[] = {{1, 11, 37},     {3, 11, 6},      {2, 1, 64},
                            {1, 128, 96},    {1, 520, 64},    {2, 70, 200},
                            {1, 21, 40000},  {1, 9, 100000},  {1, 5, 150001},
                            {1, 5, 1 << 20}, {1, 3, 1 << 20}};
  const int layout_count = sizeof(layouts) / sizeof(layouts[0]);
  const int small_layouts = layout_count - 4;
  // Every input dtype, in the order of qif_ffi.h's list.
  constexpr ffi::DataType kDTypes[] = {
#define JAXQIF_HARNESS_DTYPE(D) ffi::DataType::D,
      JAXQIF_INPUT_DTYPES(JAXQIF_HARNESS_DTYPE)
#undef JAXQIF_HARNESS_DTYPE
  };
  int runs = 0, turn = 0;
  for (int i = 0; i < layout_count; ++i) {
    const Layout& l = layouts[i];
    // The parameter arrays' lengths, taking turns: one element, a feature axis (the innermost
    // axis of a layout of several rows, else the smallest divisor of the neuron count from 3 to
    // 64: a trailing block of the neurons), one per neuron.
    int64_t feature = l.outer > 1 ? l.inner : l.neurons();
    for (int64_t d = 3; l.outer == 1 && d <= 64; ++d) {
      if (l.neurons() % d == 0) {
        feature = d;
        break;
      }
    }
    const int64_t param_counts[] = {1, feature, l.neurons()};
    const int64_t surrogates = i < small_layouts ? kNumSurrogates : 1;
    for (int64_t surrogate = 0; surrogate < surrogates; ++surrogate) {
      for (bool hard_reset : {true, false}) {
        for (bool grad_v_seq : {false, true}) {
          for (ffi::DataType dtype : kDTypes) {
            const int64_t param_count = param_counts[turn++ % 3];
            dispatch_dtype<gpu::CudaDType>(dtype, [&]<typename D>() {
              if (numbers) run<D>(l, hard_reset, grad_v_seq, surrogate, 0);
              if (arrays) run<D>(l, hard_reset, grad_v_seq, surrogate, param_count);
            });
            runs += numbers + arrays;
          }
        }
      }
    }
  }
  std::printf("sanitize_harness: %d forward + backward runs (%d with parameter arrays)\n", runs,
              arrays ? (numbers ? runs / 2 : runs) : 0);
  return 0;
}
