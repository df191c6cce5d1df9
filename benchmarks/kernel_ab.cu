// A/B timing of jaxqif's CUDA kernels without JAX, for comparing two versions of the sources in
// one device call (benchmarks/NOTES.md, "Backward: constants folded once" to "Forward variants
// tried for the bfloat16 training forward"): each benchmark shape in float32 and bfloat16, hard
// reset, CUDA events over `calls` launches (after 5 warm-up ones) rotating 4 input sets so that
// the caches do not hold them. Build one side per binary, with the library's own flags, from the
// repository root:
//   forward (inference and training), this file with the forward's translation unit:
//     nvcc -std=c++20 -O3 --fmad=false -arch=sm_90 -Icuda -Ithird_party/xla_ffi \
//       -DAB_TAG='"name"' benchmarks/kernel_ab.cu cuda/launch/cuda_forward.cu -o /tmp/ab_forward
//   backward (Sigmoid surrogate, grad_spikes only; x and the checkpoints synthetic patterns
//   that cross the threshold), this file alone, which instantiates the backward it times:
//     nvcc -std=c++20 -O3 --fmad=true -arch=sm_90 -Icuda -Ithird_party/xla_ffi -DAB_BACKWARD \
//       -DAB_TAG='"name"' benchmarks/kernel_ab.cu -o /tmp/ab_backward
// Run: /tmp/ab_forward [T (0: every shape)] [calls (default 50)]. One line per shape, dtype and
// mode: microseconds per call and the bytes moved per second. Those sections' A/B figures came
// from two separate harnesses (forward, backward), merged here into one file, which gave the
// figures of "The charge as a polynomial in V; what else bounds the long-T forward" and "The
// segmented backward at 2 to 16 warps". Sources before the checkpointed backward ("No per-step
// residual: checkpoints every few steps, H recomputed in the backward") saved H instead: build
// those with this file as of that commit's parent. Sources before the split of
// cuda/qif_cuda_kernels.cuh (cuda/README.md) need this file as of that commit's parent, and
// older than 5c258db also multiprocessor_count() defined (it lived in qif_cuda.cu then); sources
// before the launchers (cuda/README.md: launch/cuda_launch.h) this file as of that commit's parent.
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "kernels/stream_io.cuh"  // from_state
#ifdef AB_BACKWARD
#include "launch/cuda_backward.cuh"
#else
#include "launch/cuda_launch.h"
#endif

#ifndef AB_TAG
#define AB_TAG "ab"
#endif

namespace jaxqif::gpu {
#ifdef AB_BACKWARD
template ffi::Error cuda_launch_backward<SurrogateKind::kSigmoid, true>(const BackwardCall&,
                                                                        cudaStream_t);
#endif
}  // namespace jaxqif::gpu

namespace {

using namespace jaxqif;
constexpr int kSets = 4;

// Hard reset, the benchmarks' neuron.
NeuronSettings neuron(int checkpoint_steps) {
  return {.time_axis = 1,
          .tau = 2.0,
          .v_c = 0.8,
          .a0 = 1.0,
          .v_threshold = 1.0,
          .v_rest = 0.0,
          .v_reset = -0.1,
          .hard_reset = true,
          .v_init_value = -0.1,
          .checkpoint_steps = checkpoint_steps};
}

template <typename T>
__global__ void fill(T* p, int64_t n, float offset, float amplitude) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) p[i] = gpu::from_state<T>(float(offset + amplitude * sinf(0.37f * i)));
}

template <typename T>
T* device_array(int64_t n, float offset = 0.0f, float amplitude = 0.0f) {
  T* p = nullptr;
  cudaMalloc(&p, n * sizeof(T));
  fill<<<(n + 255) / 256, 256>>>(p, n, offset, amplitude);
  return p;
}

// Mean microseconds per call of launch(i), i = 0, 1, ...
template <typename Launch>
float time_us(int calls, Launch&& launch) {
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  for (int i = 0; i < 5; ++i) launch(i);
  cudaEventRecord(start);
  for (int i = 0; i < calls; ++i) launch(i);
  cudaEventRecord(stop);
  cudaEventSynchronize(stop);
  float ms = 0;
  cudaEventElapsedTime(&ms, start, stop);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return ms * 1e3f / calls;
}

void report(const char* dtype, int64_t T, int64_t N, const char* mode, float us, double bytes) {
  std::printf("%-8s %-9s %5lldx%-8lld %-5s %8.2f us  %6.0f GB/s  (%s)\n", AB_TAG, dtype,
              static_cast<long long>(T), static_cast<long long>(N), mode, us,
              bytes / (us * 1e-6) / 1e9, cudaGetErrorString(cudaGetLastError()));
}

template <typename X>
void time_shape(const char* dtype_name, ffi::DataType dtype, int64_t T, int64_t N, int calls) {
  const int64_t e = T * N;
  const Layout layout{1, T, N};
#ifndef AB_BACKWARD
  const int64_t saved = checkpoint_count(T, checkpoint_interval(sizeof(X))) * N;
  for (bool train : {false, true}) {
    std::vector<X*> xs;
    for (int i = 0; i < kSets; ++i) xs.push_back(device_array<X>(e, 0.4f, 0.8f));
    X* spikes = device_array<X>(e);
    float* checkpoints = train && saved ? device_array<float>(saved) : nullptr;
    ForwardCall f{{}, layout, dtype, neuron(checkpoint_interval(sizeof(X)))};
    const float us = time_us(calls, [&](int i) {
      f.ptr = {xs[i % kSets], nullptr, spikes, nullptr, nullptr, checkpoints};
      gpu::cuda_launch_forward(f, nullptr);
    });
    report(dtype_name, T, N, train ? "train" : "infer", us,
           double(e) * 2 * sizeof(X) + double(train ? saved : 0) * sizeof(float));
    for (X* x : xs) cudaFree(x);
    cudaFree(spikes);
    cudaFree(checkpoints);
  }
#else
  const int64_t saved = checkpoint_count(T, checkpoint_interval(sizeof(X))) * N;
  std::vector<X*> grad_spikes, grad_x, xs;
  std::vector<float*> checkpoints;
  for (int i = 0; i < kSets; ++i) {
    grad_spikes.push_back(device_array<X>(e, 0.1f, 1.0f));
    grad_x.push_back(device_array<X>(e));
    xs.push_back(device_array<X>(e, 0.4f, 0.8f));
    checkpoints.push_back(saved ? device_array<float>(saved, 0.3f, 0.6f) : nullptr);
  }
  BackwardCall b{{}, layout, dtype, {neuron(checkpoint_interval(sizeof(X))), false, 0, 4.0}};
  const float us = time_us(calls, [&](int i) {
    const int s = i % kSets;
    b.ptr = {grad_spikes[s], nullptr, nullptr, xs[s], checkpoints[s], nullptr, grad_x[s], nullptr};
    gpu::cuda_launch_backward<SurrogateKind::kSigmoid, true>(b, nullptr);
  });
  report(dtype_name, T, N, "bwd", us, double(e) * 3 * sizeof(X) + double(saved) * sizeof(float));
  for (int s = 0; s < kSets; ++s) {
    cudaFree(grad_spikes[s]);
    cudaFree(grad_x[s]);
    cudaFree(xs[s]);
    cudaFree(checkpoints[s]);
  }
#endif
}

}  // namespace

int main(int argc, char** argv) {
  const long long only_t = argc > 1 ? atoll(argv[1]) : 0;
  const int calls = argc > 2 ? atoi(argv[2]) : 50;
  const long long shapes[][2] = {
      {4, 1 << 23}, {16, 1 << 22}, {64, 1 << 21}, {256, 1 << 16}, {1024, 1 << 14}};
  for (const auto& s : shapes) {
    if (only_t && s[0] != only_t) continue;
    time_shape<float>("float32", ffi::DataType::F32, s[0], s[1], calls);
    time_shape<__nv_bfloat16>("bfloat16", ffi::DataType::BF16, s[0], s[1], calls);
  }
  return 0;
}
