// Fused CUDA forward and BPTT kernels of the QIF neuron, as XLA FFI handlers.
//
// One thread walks one neuron through all T steps. The recurrence is serial, but the loads it
// consumes (x[t]; in the backward grad_spikes[t], grad_v_seq[t] and H[t-1]) do not depend on it,
// so each thread keeps the next chunk of kChunk steps loading while it computes the current one.
// Streams are touched exactly once, so loads and stores use the evict-first cache hints.
//
// The chunk length is a template parameter: with many neurons, many resident threads keep the
// memory system busy and a short chunk saves registers; with few neurons (long sequences of a
// small layer) each thread must keep more loads in flight itself.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "qif_ffi.h"
#include "qif_math.h"
#include "xla/ffi/api/ffi.h"

namespace jaxqif {
namespace {

constexpr int kThreadsPerBlock = 128;

__device__ __forceinline__ float to_state(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_state(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_state(float v) { return v; }
__device__ __forceinline__ double to_state(double v) { return v; }

template <typename X, typename S>
__device__ __forceinline__ X from_state(S v);
template <>
__device__ __forceinline__ __half from_state<__half, float>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_state<__nv_bfloat16, float>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ float from_state<float, float>(float v) { return v; }
template <>
__device__ __forceinline__ double from_state<double, double>(double v) { return v; }

template <typename T>
__device__ __forceinline__ T load_stream(const T* p) { return __ldcs(p); }
template <typename T>
__device__ __forceinline__ void store_stream(T* p, T v) { __stcs(p, v); }

// Loads steps t0 + u * direction (u < kChunk) of a [outer, T, inner] stream for this neuron;
// steps outside [0, T) are left alone.
template <int kDirection, int kChunk, typename T>
__device__ __forceinline__ void load_chunk(T (&buf)[kChunk], const T* base, int64_t t0,
                                           int64_t steps, int64_t inner) {
#pragma unroll
  for (int u = 0; u < kChunk; ++u) {
    const int64_t t = t0 + kDirection * u;
    if (t >= 0 && t < steps) buf[u] = load_stream(base + t * inner);
  }
}

template <typename X, typename S, bool kHardReset, int kChunk>
__global__ void __launch_bounds__(kThreadsPerBlock)
    forward_kernel(const X* __restrict__ x, const S* __restrict__ v_init, X* __restrict__ spikes,
                   S* __restrict__ v_final, S* __restrict__ v_seq, S* __restrict__ residual,
                   int64_t steps, int64_t inner, int64_t neurons, QifParams<S> p) {
  const int64_t n = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (n >= neurons) return;
  const int64_t o = n / inner;
  const int64_t offset = o * steps * inner + (n - o * inner);  // element (o, 0, i)
  x += offset;
  spikes += offset;
  if (v_seq) v_seq += offset;
  if (residual) residual += offset;

  S v = v_init[n];
  X current[kChunk], next[kChunk];
  load_chunk<1>(current, x, 0, steps, inner);
  for (int64_t t0 = 0; t0 < steps; t0 += kChunk) {
    load_chunk<1>(next, x, t0 + kChunk, steps, inner);
#pragma unroll
    for (int u = 0; u < kChunk; ++u) {
      const int64_t t = t0 + u;
      if (t < steps) {
        const S h = qif_charge(v, S(to_state(current[u])), p);
        const bool spike = qif_fires(h, p);
        store_stream(spikes + t * inner, from_state<X>(spike ? S(1) : S(0)));
        if (residual) store_stream(residual + t * inner, h);
        v = qif_reset<kHardReset>(h, spike, p);
        if (v_seq) store_stream(v_seq + t * inner, v);
      }
    }
#pragma unroll
    for (int u = 0; u < kChunk; ++u) current[u] = next[u];
  }
  v_final[n] = v;
}

template <SurrogateKind kKind, bool kHardReset, typename X, typename S, int kChunk>
__global__ void __launch_bounds__(kThreadsPerBlock)
    backward_kernel(const X* __restrict__ grad_spikes, const S* __restrict__ grad_v_seq,
                    const S* __restrict__ grad_v_final, const S* __restrict__ residual,
                    const S* __restrict__ v_init, X* __restrict__ grad_x,
                    S* __restrict__ grad_v_init, int64_t steps, int64_t inner, int64_t neurons,
                    QifParams<S> p) {
  const int64_t n = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (n >= neurons) return;
  const int64_t o = n / inner;
  const int64_t offset = o * steps * inner + (n - o * inner);
  residual += offset;
  grad_x += offset;
  if (grad_spikes) grad_spikes += offset;
  if (grad_v_seq) grad_v_seq += offset;

  // Chunks walk downwards: slot u holds step t0 - u; h_prev holds H[t - 1] for that step.
  X gs_cur[kChunk] = {}, gs_next[kChunk] = {};
  S gv_cur[kChunk] = {}, gv_next[kChunk] = {};
  S hp_cur[kChunk], hp_next[kChunk];
  const int64_t last = steps - 1;
  S h = residual[last * inner];
  if (grad_spikes) load_chunk<-1>(gs_cur, grad_spikes, last, steps, inner);
  if (grad_v_seq) load_chunk<-1>(gv_cur, grad_v_seq, last, steps, inner);
  load_chunk<-1>(hp_cur, residual, last - 1, steps, inner);
  S carry = grad_v_final ? grad_v_final[n] : S(0);
  const S v_start = v_init[n];
  for (int64_t t0 = last; t0 >= 0; t0 -= kChunk) {
    if (grad_spikes) load_chunk<-1>(gs_next, grad_spikes, t0 - kChunk, steps, inner);
    if (grad_v_seq) load_chunk<-1>(gv_next, grad_v_seq, t0 - kChunk, steps, inner);
    load_chunk<-1>(hp_next, residual, t0 - kChunk - 1, steps, inner);
#pragma unroll
    for (int u = 0; u < kChunk; ++u) {
      const int64_t t = t0 - u;
      if (t >= 0) {
        const S v_prev = t > 0 ? qif_state_after<kHardReset>(hp_cur[u], p) : v_start;
        const S grad_h = qif_backward_step<kKind, kHardReset>(
            h, v_prev, S(to_state(gs_cur[u])), gv_cur[u], carry, p);
        store_stream(grad_x + t * inner, from_state<X>(grad_h * p.inv_tau));
        h = hp_cur[u];
      }
    }
#pragma unroll
    for (int u = 0; u < kChunk; ++u) {
      gs_cur[u] = gs_next[u];
      gv_cur[u] = gv_next[u];
      hp_cur[u] = hp_next[u];
    }
  }
  grad_v_init[n] = carry;
}



ffi::Error launch_status(const char* what) {
  const cudaError_t status = cudaGetLastError();
  if (status == cudaSuccess) return ffi::Error::Success();
  return ffi::Error::Internal(std::string("jaxqif: launching the ") + what +
                              " kernel failed: " + cudaGetErrorString(status));
}

unsigned int blocks_for(int64_t neurons) {
  return static_cast<unsigned int>((neurons + kThreadsPerBlock - 1) / kThreadsPerBlock);
}

// True when the launch cannot fill the GPU with threads (fewer than 1024 per multiprocessor),
// so each thread should keep a longer chunk of loads in flight.
bool few_neurons(int64_t neurons) {
  static int multiprocessors = [] {
    int device = 0, count = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
      cudaGetLastError();  // leave no sticky error for the launch check
      return 132;
    }
    return count;
  }();
  return neurons < int64_t{multiprocessors} * 1024;
}

ffi::Error ForwardImpl(cudaStream_t stream, ffi::AnyBuffer x, ffi::AnyBuffer v_init,
                       ffi::Result<ffi::AnyBuffer> spikes, ffi::Result<ffi::AnyBuffer> v_final,
                       ffi::Result<ffi::AnyBuffer> v_seq, ffi::Result<ffi::AnyBuffer> residual,
                       int64_t time_axis, double tau, double v_c, double a0, double v_threshold,
                       double v_rest, double v_reset, bool hard_reset) {
  ForwardCall call;
  JAXQIF_RETURN_IF_ERROR(
      check_forward(x, v_init, *spikes, *v_final, *v_seq, *residual, time_axis, &call));
  const Layout& l = call.layout;
  if (l.elements() == 0) return ffi::Error::Success();
  if (l.neurons() > int64_t{kThreadsPerBlock} * 0x7fffffff) {
    return ffi::Error::InvalidArgument("jaxqif: too many neurons for one launch");
  }
  dispatch_dtype<__half, __nv_bfloat16>(call.input_dtype, [&](auto x_tag, auto s_tag) {
    using X = decltype(x_tag);
    using S = decltype(s_tag);
    const auto p = QifParams<S>::from_double(tau, v_c, a0, v_threshold, v_rest, v_reset, 1.0,
                                             hard_reset, false);
    auto kernel = few_neurons(l.neurons())
                      ? (hard_reset ? forward_kernel<X, S, true, 32> : forward_kernel<X, S, false, 32>)
                      : (hard_reset ? forward_kernel<X, S, true, 8> : forward_kernel<X, S, false, 8>);
    kernel<<<blocks_for(l.neurons()), kThreadsPerBlock, 0, stream>>>(
        data_or_null<X>(x), data_or_null<S>(v_init), data_or_null<X>(*spikes),
        data_or_null<S>(*v_final), data_or_null<S>(*v_seq), data_or_null<S>(*residual), l.steps,
        l.inner, l.neurons(), p);
  });
  return launch_status("forward");
}

ffi::Error BackwardImpl(cudaStream_t stream, ffi::AnyBuffer grad_spikes, ffi::AnyBuffer grad_v_seq,
                        ffi::AnyBuffer grad_v_final, ffi::AnyBuffer residual, ffi::AnyBuffer v_init,
                        ffi::Result<ffi::AnyBuffer> grad_x, ffi::Result<ffi::AnyBuffer> grad_v_init,
                        int64_t time_axis, double tau, double v_c, double a0, double v_threshold,
                        double v_rest, double v_reset, bool hard_reset, bool detach_reset,
                        int64_t surrogate, double alpha) {
  BackwardCall call;
  JAXQIF_RETURN_IF_ERROR(check_backward(grad_spikes, grad_v_seq, grad_v_final, residual, v_init,
                                        *grad_x, *grad_v_init, time_axis, surrogate, &call));
  const Layout& l = call.layout;
  if (l.elements() == 0) return ffi::Error::Success();
  if (l.neurons() > int64_t{kThreadsPerBlock} * 0x7fffffff) {
    return ffi::Error::InvalidArgument("jaxqif: too many neurons for one launch");
  }
  dispatch_dtype<__half, __nv_bfloat16>(call.input_dtype, [&](auto x_tag, auto s_tag) {
    using X = decltype(x_tag);
    using S = decltype(s_tag);
    const auto p = QifParams<S>::from_double(tau, v_c, a0, v_threshold, v_rest, v_reset, alpha,
                                             hard_reset, detach_reset);
    const bool few = few_neurons(l.neurons());
    dispatch_surrogate_reset(surrogate, hard_reset, [&]<SurrogateKind kKind, bool kHardReset>() {
      auto kernel = few ? backward_kernel<kKind, kHardReset, X, S, 16>
                        : backward_kernel<kKind, kHardReset, X, S, 8>;
      kernel<<<blocks_for(l.neurons()), kThreadsPerBlock, 0, stream>>>(
          data_or_null<X>(grad_spikes), data_or_null<S>(grad_v_seq),
          data_or_null<S>(grad_v_final), data_or_null<S>(residual), data_or_null<S>(v_init),
          data_or_null<X>(*grad_x), data_or_null<S>(*grad_v_init), l.steps, l.inner,
          l.neurons(), p);
    });
  });
  return launch_status("backward");
}

}  // namespace
}  // namespace jaxqif

namespace ffi = xla::ffi;

// Both handlers only launch on XLA's stream: no allocation, no synchronization, so XLA may
// capture them in CUDA graphs.
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxqifForwardCuda, jaxqif::ForwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<ffi::AnyBuffer>()  // x
                                  .Arg<ffi::AnyBuffer>()  // v_init
                                  .Ret<ffi::AnyBuffer>()  // spikes
                                  .Ret<ffi::AnyBuffer>()  // v_final
                                  .Ret<ffi::AnyBuffer>()  // v_seq
                                  .Ret<ffi::AnyBuffer>()  // residual
                                  JAXQIF_NEURON_ATTRS,
                              {ffi::Traits::kCmdBufferCompatible});

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxqifBackwardCuda, jaxqif::BackwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<ffi::AnyBuffer>()  // grad_spikes
                                  .Arg<ffi::AnyBuffer>()  // grad_v_seq
                                  .Arg<ffi::AnyBuffer>()  // grad_v_final
                                  .Arg<ffi::AnyBuffer>()  // residual
                                  .Arg<ffi::AnyBuffer>()  // v_init
                                  .Ret<ffi::AnyBuffer>()  // grad_x
                                  .Ret<ffi::AnyBuffer>()  // grad_v_init
                                  JAXQIF_BACKWARD_ATTRS,
                              {ffi::Traits::kCmdBufferCompatible});
