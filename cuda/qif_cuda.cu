// Fused CUDA forward and BPTT kernels of the QIF neuron, as XLA FFI handlers.
//
// One thread walks a group of kVec adjacent neurons through all T steps. The recurrence is
// serial, but the loads it consumes (x[t]; in the backward grad_spikes[t], grad_v_seq[t] and
// H[t-1]) do not depend on it, so each thread keeps the next chunk of kChunk steps loading while
// it computes the current one. Streams are touched exactly once, so loads and stores use the
// evict-first cache hints.
//
// Two shapes of work, chosen per call (see choose_config):
//  * wide: 16 bytes of inputs per step per thread (4 float32, 8 half, 2 float64 neurons), when
//    there are enough neurons to fill the GPU: short sequences need the wide accesses to keep
//    enough bytes in flight;
//  * narrow: one neuron per thread, with a long chunk when few neurons cannot fill the GPU
//    (long sequences of a small layer), so each thread keeps more loads in flight itself.
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

// The values of kVec adjacent neurons in one stream, moved with the widest aligned access.
template <typename T, int kVec>
struct alignas(sizeof(T) * kVec >= 16 ? 16 : sizeof(T) * kVec) Pack {
  T v[kVec];
};

template <typename T, int kVec>
__device__ __forceinline__ Pack<T, kVec> zero_pack() {
  Pack<T, kVec> r;
#pragma unroll
  for (int k = 0; k < kVec; ++k) r.v[k] = from_state<T>(decltype(to_state(T{}))(0));
  return r;
}

template <typename T, int kVec>
__device__ __forceinline__ Pack<T, kVec> load_pack(const T* p) {
  constexpr int kBytes = sizeof(T) * kVec;
  Pack<T, kVec> r;
  if constexpr (kBytes >= 16) {
#pragma unroll
    for (int k = 0; k < kBytes / 16; ++k) {
      reinterpret_cast<int4*>(&r)[k] = __ldcs(reinterpret_cast<const int4*>(p) + k);
    }
  } else if constexpr (kBytes == 8) {
    *reinterpret_cast<int2*>(&r) = __ldcs(reinterpret_cast<const int2*>(p));
  } else if constexpr (kBytes == 4) {
    *reinterpret_cast<int*>(&r) = __ldcs(reinterpret_cast<const int*>(p));
  } else {
    r.v[0] = __ldcs(p);
  }
  return r;
}

template <typename T, int kVec>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, kVec>& value) {
  constexpr int kBytes = sizeof(T) * kVec;
  if constexpr (kBytes >= 16) {
#pragma unroll
    for (int k = 0; k < kBytes / 16; ++k) {
      __stcs(reinterpret_cast<int4*>(p) + k, reinterpret_cast<const int4*>(&value)[k]);
    }
  } else if constexpr (kBytes == 8) {
    __stcs(reinterpret_cast<int2*>(p), *reinterpret_cast<const int2*>(&value));
  } else if constexpr (kBytes == 4) {
    __stcs(reinterpret_cast<int*>(p), *reinterpret_cast<const int*>(&value));
  } else {
    __stcs(p, value.v[0]);
  }
}

// Loads steps t0 + u * direction (u < kChunk) of a [outer, T, inner] stream for this thread's
// neurons; steps outside [0, T) are left alone.
template <int kDirection, int kChunk, typename T, int kVec>
__device__ __forceinline__ void load_chunk(Pack<T, kVec> (&buf)[kChunk], const T* base,
                                           int64_t t0, int64_t steps, int64_t inner) {
#pragma unroll
  for (int u = 0; u < kChunk; ++u) {
    const int64_t t = t0 + kDirection * u;
    if (t >= 0 && t < steps) buf[u] = load_pack<T, kVec>(base + t * inner);
  }
}

// Offset of element (o, 0, i) for the first neuron n = o * inner + i of this thread's group.
// inner is a multiple of kVec, so a group never straddles two rows.
__device__ __forceinline__ int64_t group_offset(int64_t n, int64_t steps, int64_t inner) {
  const int64_t o = n / inner;
  return o * steps * inner + (n - o * inner);
}

template <typename X, typename S, bool kHardReset, int kVec, int kChunk>
__global__ void __launch_bounds__(kThreadsPerBlock)
    forward_kernel(const X* __restrict__ x, const S* __restrict__ v_init, X* __restrict__ spikes,
                   S* __restrict__ v_final, S* __restrict__ v_seq, S* __restrict__ residual,
                   int64_t steps, int64_t inner, int64_t groups, QifParams<S> p) {
  const int64_t group = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (group >= groups) return;
  const int64_t n = group * kVec;
  const int64_t offset = group_offset(n, steps, inner);
  x += offset;
  spikes += offset;
  if (v_seq) v_seq += offset;
  if (residual) residual += offset;

  Pack<S, kVec> v = load_pack<S, kVec>(v_init + n);
  Pack<X, kVec> current[kChunk], next[kChunk];
  load_chunk<1>(current, x, 0, steps, inner);
  for (int64_t t0 = 0; t0 < steps; t0 += kChunk) {
    load_chunk<1>(next, x, t0 + kChunk, steps, inner);
#pragma unroll
    for (int u = 0; u < kChunk; ++u) {
      const int64_t t = t0 + u;
      if (t < steps) {
        Pack<X, kVec> spike_out;
        Pack<S, kVec> h_out;
#pragma unroll
        for (int k = 0; k < kVec; ++k) {
          const S h = qif_charge(v.v[k], S(to_state(current[u].v[k])), p);
          const bool spike = qif_fires(h, p);
          spike_out.v[k] = from_state<X>(spike ? S(1) : S(0));
          h_out.v[k] = h;
          v.v[k] = qif_reset<kHardReset>(h, spike, p);
        }
        store_pack(spikes + t * inner, spike_out);
        if (residual) store_pack(residual + t * inner, h_out);
        if (v_seq) store_pack(v_seq + t * inner, v);
      }
    }
#pragma unroll
    for (int u = 0; u < kChunk; ++u) current[u] = next[u];
  }
  store_pack(v_final + n, v);
}

template <SurrogateKind kKind, bool kHardReset, typename X, typename S, int kVec, int kChunk>
__global__ void __launch_bounds__(kThreadsPerBlock)
    backward_kernel(const X* __restrict__ grad_spikes, const S* __restrict__ grad_v_seq,
                    const S* __restrict__ grad_v_final, const S* __restrict__ residual,
                    const S* __restrict__ v_init, X* __restrict__ grad_x,
                    S* __restrict__ grad_v_init, int64_t steps, int64_t inner, int64_t groups,
                    QifParams<S> p) {
  const int64_t group = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (group >= groups) return;
  const int64_t n = group * kVec;
  const int64_t offset = group_offset(n, steps, inner);
  residual += offset;
  grad_x += offset;
  if (grad_spikes) grad_spikes += offset;
  if (grad_v_seq) grad_v_seq += offset;

  // Chunks walk downwards: slot u holds step t0 - u, and h_prev[u] holds H[t0 - u - 1].
  // Absent cotangents stay zero.
  Pack<X, kVec> gs_cur[kChunk], gs_next[kChunk];
  Pack<S, kVec> gv_cur[kChunk], gv_next[kChunk];
  Pack<S, kVec> hp_cur[kChunk], hp_next[kChunk];
#pragma unroll
  for (int u = 0; u < kChunk; ++u) {
    gs_cur[u] = gs_next[u] = zero_pack<X, kVec>();
    gv_cur[u] = gv_next[u] = zero_pack<S, kVec>();
  }
  const int64_t last = steps - 1;
  Pack<S, kVec> h = load_pack<S, kVec>(residual + last * inner);
  if (grad_spikes) load_chunk<-1>(gs_cur, grad_spikes, last, steps, inner);
  if (grad_v_seq) load_chunk<-1>(gv_cur, grad_v_seq, last, steps, inner);
  load_chunk<-1>(hp_cur, residual, last - 1, steps, inner);
  Pack<S, kVec> carry = grad_v_final ? load_pack<S, kVec>(grad_v_final + n) : zero_pack<S, kVec>();
  const Pack<S, kVec> v_start = load_pack<S, kVec>(v_init + n);
  for (int64_t t0 = last; t0 >= 0; t0 -= kChunk) {
    if (grad_spikes) load_chunk<-1>(gs_next, grad_spikes, t0 - kChunk, steps, inner);
    if (grad_v_seq) load_chunk<-1>(gv_next, grad_v_seq, t0 - kChunk, steps, inner);
    load_chunk<-1>(hp_next, residual, t0 - kChunk - 1, steps, inner);
#pragma unroll
    for (int u = 0; u < kChunk; ++u) {
      const int64_t t = t0 - u;
      if (t >= 0) {
        Pack<X, kVec> gx;
#pragma unroll
        for (int k = 0; k < kVec; ++k) {
          const S v_prev = t > 0 ? qif_state_after<kHardReset>(hp_cur[u].v[k], p) : v_start.v[k];
          const S grad_h = qif_backward_step<kKind, kHardReset>(
              h.v[k], v_prev, S(to_state(gs_cur[u].v[k])), gv_cur[u].v[k], carry.v[k], p);
          gx.v[k] = from_state<X>(grad_h * p.inv_tau);
        }
        store_pack(grad_x + t * inner, gx);
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
  store_pack(grad_v_init + n, carry);
}

ffi::Error launch_status(const char* what) {
  const cudaError_t status = cudaGetLastError();
  if (status == cudaSuccess) return ffi::Error::Success();
  return ffi::Error::Internal(std::string("jaxqif: launching the ") + what +
                              " kernel failed: " + cudaGetErrorString(status));
}

unsigned int blocks_for(int64_t threads) {
  return static_cast<unsigned int>((threads + kThreadsPerBlock - 1) / kThreadsPerBlock);
}

int multiprocessor_count() {
  static const int count = [] {
    int device = 0, value = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&value, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
      cudaGetLastError();  // leave no sticky error for the launch check
      return 132;
    }
    return value;
  }();
  return count;
}

enum class Config { kWide, kNarrow, kNarrowLong };

// Neurons per thread in the wide configuration: 16 bytes of input per step.
template <typename X>
constexpr int kWideVec = 16 / static_cast<int>(sizeof(X));

// The wide configuration needs groups that never straddle a row, 16-byte aligned buffers, and
// enough groups to give every multiprocessor 1024 threads; otherwise one neuron per thread, with
// longer chunks when even that cannot fill the GPU.
Config choose_config(const Layout& l, int wide_vec, std::initializer_list<const void*> buffers) {
  const int64_t threads_to_fill = int64_t{multiprocessor_count()} * 1024;
  bool aligned = true;
  for (const void* b : buffers) aligned &= reinterpret_cast<uintptr_t>(b) % 16 == 0;
  if (aligned && l.inner % wide_vec == 0 && l.neurons() / wide_vec >= threads_to_fill) {
    return Config::kWide;
  }
  return l.neurons() >= threads_to_fill ? Config::kNarrow : Config::kNarrowLong;
}

// Calls fn.template operator()<kVec, kChunk>() with the configuration's group width and chunk;
// kLongChunk is the chunk for too few neurons.
template <typename X, int kLongChunk, typename Fn>
void dispatch_config(Config config, Fn&& fn) {
  switch (config) {
    case Config::kWide: return fn.template operator()<kWideVec<X>, 4>();
    case Config::kNarrow: return fn.template operator()<1, 8>();
    default: return fn.template operator()<1, kLongChunk>();
  }
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
    const Config config =
        choose_config(l, kWideVec<X>, {x.untyped_data(), v_init.untyped_data(),
                                       spikes->untyped_data(), v_final->untyped_data(),
                                       v_seq->untyped_data(), residual->untyped_data()});
    dispatch_config<X, 32>(config, [&]<int kVec, int kChunk>() {
      auto kernel = hard_reset ? forward_kernel<X, S, true, kVec, kChunk>
                               : forward_kernel<X, S, false, kVec, kChunk>;
      const int64_t groups = l.neurons() / kVec;
      kernel<<<blocks_for(groups), kThreadsPerBlock, 0, stream>>>(
          data_or_null<X>(x), data_or_null<S>(v_init), data_or_null<X>(*spikes),
          data_or_null<S>(*v_final), data_or_null<S>(*v_seq), data_or_null<S>(*residual),
          l.steps, l.inner, groups, p);
    });
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
    const Config config = choose_config(
        l, kWideVec<X>, {grad_spikes.untyped_data(), grad_v_seq.untyped_data(),
                         grad_v_final.untyped_data(), residual.untyped_data(),
                         v_init.untyped_data(), grad_x->untyped_data(), grad_v_init->untyped_data()});
    dispatch_surrogate_reset(surrogate, hard_reset, [&]<SurrogateKind kKind, bool kHardReset>() {
      dispatch_config<X, 16>(config, [&]<int kVec, int kChunk>() {
        const int64_t groups = l.neurons() / kVec;
        backward_kernel<kKind, kHardReset, X, S, kVec, kChunk>
            <<<blocks_for(groups), kThreadsPerBlock, 0, stream>>>(
                data_or_null<X>(grad_spikes), data_or_null<S>(grad_v_seq),
                data_or_null<S>(grad_v_final), data_or_null<S>(residual),
                data_or_null<S>(v_init), data_or_null<X>(*grad_x), data_or_null<S>(*grad_v_init),
                l.steps, l.inner, groups, p);
      });
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
