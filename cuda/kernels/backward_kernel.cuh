// The serial backward (BPTT) kernel: one thread walks a group of kVec adjacent neurons through
// all T steps, an interval of checkpoint_interval steps at a time, recomputing each interval's
// H from the forward's checkpoints and x rather than reading a stored H. The wide, narrow and
// narrow long plans (launch/plan.h); few neurons take segmented_backward_kernel.cuh.
//
// Device code only, with no host-only include: a kernel header (see cuda/README.md).
#pragma once

#include "std_headers.h"

#include "kernels/neuron_params.cuh"
#include "kernels/stream_io.cuh"
#include "qif_buffers.h"
#include "qif_math.h"

namespace jaxqif::gpu {

// Blocks per multiprocessor the wide and narrow backward are compiled for (their register
// budget): 5 blocks of 128 threads (96 registers) hold an interval of each stream without
// spilling, against 4 when the compiler is left free; with grad_v_seq, a fourth stream, 4.
template <bool kHasGradVSeq>
constexpr int kBackwardBlocksPerSM = kHasGradVSeq ? 4 : 5;

// The per-neuron kernel holds each neuron's constants, values and parameter sums beside the
// serial kernel's interval, one neuron per thread (launch/plan.h, per_neuron_plan). It is
// compiled for as many blocks per multiprocessor as hold that without spilling, for every
// surrogate and reset mode: float32 (intervals of 8 steps) 5 (96 registers); 16-bit inputs
// (intervals of 4) 7 on Hopper (72), 6 on sm_80, where 7 spills; float64 2. (The device pass of
// each architecture sees its own __CUDA_ARCH__, as the CUDA guide's architecture-specific
// launch bounds do.)
template <typename X, typename S>
constexpr int kPerNeuronBackwardBlocksPerSM =
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
    sizeof(S) == 8 ? 2 : sizeof(X) == 2 ? 6 : 5;
#else
    sizeof(S) == 8 ? 2 : sizeof(X) == 2 ? 7 : 5;
#endif

// Walks the checkpoint intervals downwards, one thread per group through all T steps (the
// plans with enough neurons to fill the GPU, and layouts that cannot be staged). For each
// interval, H is recomputed upwards from the V entering it (its checkpoint, or v_init) and
// x, then BPTT walks it down. The loads run one interval ahead: x and the checkpoint of the
// interval below are issued as soon as this one's H is known, its cotangents as soon as this
// one's BPTT is done, so each load has a pass of compute (and the other warps) to arrive.
// The neurons' constants come from make_params(n) (kernels/neuron_params.cuh); with
// NeuronParams (Pointers: BackwardArrays) each neuron's ParamGradSums are added up step by step
// in registers and its wanted parameter gradients written at the end. has_grad_v_seq: a flag
// (compile-time in the scalar kernel, run-time in the per-neuron one).
template <SurrogateKind kKind, bool kHardReset, typename X, typename S, typename Sh,
          typename Pointers, typename MakeParams, typename GradVSeq>
__device__ __forceinline__ void backward_walk(const Pointers& ptr, int64_t steps, int64_t inner,
                                              int64_t groups, const MakeParams& make_params,
                                              S v_init_value, GradVSeq has_grad_v_seq) {
  // A chunk is one checkpoint interval, or shorter in the short plan, which is launched only
  // for sequences of one chunk (and so one interval, with no checkpoints).
  constexpr int kVec = Sh::kVec, kC = Sh::kChunk, kInterval = checkpoint_interval(sizeof(X));
  static_assert(kC <= kInterval, "a chunk is at most one checkpoint interval");
  static_assert(!Sh::kStaged, "the staged backward is segmented_backward_kernel");
  using State = Pack<S, kVec>;
  using Input = Pack<X, kVec>;
  const int64_t group = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (group >= groups) return;
  const int64_t n = group * kVec;
  const auto p = make_params(n);
  constexpr bool kParamGrads = decltype(p)::kPerNeuron;
  const int64_t offset = group_offset(n, steps, inner);
  const int64_t top = checkpoint_count(steps, kInterval);  // the last interval
  const X* x = static_cast<const X*>(ptr.x) + offset;
  const X* grad_spikes =
      ptr.grad_spikes ? static_cast<const X*>(ptr.grad_spikes) + offset : nullptr;
  const S* grad_v_seq =
      has_grad_v_seq ? static_cast<const S*>(ptr.grad_v_seq) + offset : nullptr;
  const S* checkpoints =
      top > 0 ? static_cast<const S*>(ptr.checkpoints) + group_offset(n, top, inner) : nullptr;
  X* grad_x = static_cast<X*>(ptr.grad_x) + offset;
  const State v_start = initial_state<S, kVec>(ptr.v_init, n, v_init_value);

  Input xs[kC], gs[kC];
  State gv[kMaybe<GradVSeq> ? kC : 1];
  State entry;  // V entering the interval
  // all (std::integral_constant): every step of interval k is below T (all but the top one).
  auto load_inputs = [&](int64_t k, auto all) {
    entry = k > 0 ? load_pack<S, kVec>(checkpoints + (k - 1) * inner) : v_start;
    const X* src = x + k * kC * inner;
#pragma unroll
    for (int u = 0; u < kC; ++u, src += inner) {
      if (decltype(all)::value || k * kC + u < steps) xs[u] = load_pack<X, kVec>(src);
    }
  };
  auto load_cotangents = [&](int64_t k, auto all) {
    const int64_t first = k * kC * inner;
#pragma unroll
    for (int u = 0; u < kC; ++u) {
      if (decltype(all)::value || k * kC + u < steps) {
        gs[u] = grad_spikes ? load_pack<X, kVec>(grad_spikes + first + u * inner)
                            : zero_pack<X, kVec>();
        if constexpr (kMaybe<GradVSeq>) {
          gv[u] = has_grad_v_seq ? load_pack<S, kVec>(grad_v_seq + first + u * inner)
                                 : zero_pack<S, kVec>();
        }
      }
    }
  };

  State carry = ptr.grad_v_final
                    ? load_pack<S, kVec>(static_cast<const S*>(ptr.grad_v_final) + n)
                    : zero_pack<S, kVec>();
  ParamGradSums<S> sums[kParamGrads ? kVec : 1];
  const bool top_full = steps == (top + 1) * kC;
  if (top_full) {
    load_inputs(top, std::true_type{});
    load_cotangents(top, std::true_type{});
  } else {
    load_inputs(top, std::false_type{});
    load_cotangents(top, std::false_type{});
  }
  for (int64_t k = top; k >= 0; --k) {
    auto interval = [&](auto all) {
      const int64_t t0 = k * kC;
      const State v_entry = entry;
      State h[kC];
      State v = v_entry;
#pragma unroll
      for (int u = 0; u < kC; ++u) {
        if (!decltype(all)::value && t0 + u >= steps) break;
#pragma unroll
        for (int j = 0; j < kVec; ++j) {
          h[u].v[j] = qif_charge(v.v[j], S(to_state(xs[u].v[j])), p[j]);
          v.v[j] = qif_state_after<kHardReset>(h[u].v[j], p[j]);
        }
      }
      // The parameter sums take this interval's x in BPTT, after xs has taken the one below.
      [[maybe_unused]] Input x_now[kParamGrads ? kC : 1];
      if constexpr (kParamGrads) {
#pragma unroll
        for (int u = 0; u < kC; ++u) x_now[u] = xs[u];
      }
      if (k > 0) load_inputs(k - 1, std::true_type{});
#pragma unroll
      for (int u = kC - 1; u >= 0; --u) {
        if (!decltype(all)::value && t0 + u >= steps) continue;
        Input gx;
#pragma unroll
        for (int j = 0; j < kVec; ++j) {
          const S v_prev =
              u > 0 ? qif_state_after<kHardReset>(h[u - 1].v[j], p[j]) : v_entry.v[j];
          S g_v = S(0);
          if constexpr (kMaybe<GradVSeq>) g_v = gv[u].v[j];
          const S g_spike = S(to_state(gs[u].v[j]));
          const S grad_h = qif_backward_step<kKind, kHardReset>(
              h[u].v[j], v_prev, g_spike, g_v, carry.v[j], p[j],
              [&](const StepDerivatives<S>& d) {
                if constexpr (kParamGrads) {
                  sums[j].template add<kHardReset>(d, h[u].v[j], v_prev,
                                                   S(to_state(x_now[u].v[j])), g_spike, p[j],
                                                   p.values(j));
                }
              });
          gx.v[j] = from_state<X>(grad_h * p[j].inv_tau);
        }
        store_pack(grad_x + (t0 + u) * inner, gx);
      }
      if (k > 0) load_cotangents(k - 1, std::true_type{});
    };
    if (k == top && !top_full) interval(std::false_type{});
    else interval(std::true_type{});
  }
  if (ptr.grad_v_init) store_pack(static_cast<S*>(ptr.grad_v_init) + n, carry);
  if constexpr (kParamGrads) store_param_grads(ptr.grads, n, sums, make_params);
}

// Every neuron with the call's constants; one instance with grad_v_seq and one without.
template <SurrogateKind kKind, bool kHardReset, bool kHasGradVSeq, typename X, typename S,
          typename Sh>
__global__ void __launch_bounds__(128, kBackwardBlocksPerSM<kHasGradVSeq>)
    backward_kernel(BackwardPointers ptr, int64_t steps, int64_t inner, int64_t groups,
                    QifParams<S> p, S v_init_value) {
  backward_walk<kKind, kHardReset, X, S, Sh>(ptr, steps, inner, groups, SharedParamsOf<S>{p},
                                             v_init_value, Fixed<kHasGradVSeq>{});
}

// Some parameter given as an array: each neuron's constants (NeuronParams) and its parameter
// gradients, one neuron per thread; grad_v_seq chosen at run time.
template <SurrogateKind kKind, bool kHardReset, typename X, typename S, typename Sh>
__global__ void __launch_bounds__(128, kPerNeuronBackwardBlocksPerSM<X, S>)
    per_neuron_backward_kernel(BackwardArrays ptr, int64_t steps, int64_t inner, int64_t groups,
                               QifParams<S> shared, S v_init_value, NeuronValues<S> numbers) {
  static_assert(Sh::kVec == 1, "per-neuron calls take one neuron per thread (per_neuron_plan)");
  backward_walk<kKind, kHardReset, X, S, Sh>(
      ptr, steps, inner, groups, NeuronParamsOf<S, Sh::kVec>{ptr.params, numbers, shared},
      v_init_value, ptr.grad_v_seq != nullptr);
}

}  // namespace jaxqif::gpu
