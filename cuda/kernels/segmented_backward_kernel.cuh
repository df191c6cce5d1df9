// The segmented (time-parallel) backward kernel, for layouts with too few neurons to fill the
// GPU: the time axis split over several warps, whose affine pieces of the BPTT recurrence are
// chained through shared memory.
//
// Device code only, with no host-only include: a kernel header (see cuda/README.md).
#pragma once

#include <cuda_pipeline.h>

#include "std_headers.h"

#include "kernels/neuron_params.cuh"
#include "kernels/shapes.h"
#include "kernels/stream_io.cuh"
#include "qif_buffers.h"
#include "qif_math.h"

namespace jaxqif::gpu {

// The segmented plan: a segment is one checkpoint interval, so that each warp starts its
// recomputation of H from a checkpoint. Its shared memory: kernels/shapes.h's
// segmented_shared_bytes, from these readers' rings.
template <typename X, typename Sh>
using SegmentInputReader = StreamReader<true, -1, Sh::kChunk, X, Sh::kVec, kSegmentSlots>;
template <typename S, typename Sh>
using SegmentStateReader = StreamReader<true, -1, Sh::kChunk, S, Sh::kVec, kSegmentSlots>;

// Time-parallel backward for layouts with too few neurons to fill the GPU (long sequences of
// a small layer), where one thread walking all T steps leaves the GPU idle. A block is 32 lanes
// (groups of neurons) x W warps; the intervals are walked downwards in rounds of W, warp w taking
// interval w of each round. Given H, the recurrence of G[t] = dL/dH[t] is affine
// (qif_backward_affine), so per round:
//  1. each thread recomputes its interval's H upwards from the checkpoint entering it, and with
//     it the per-step maps and their composite, in parallel;
//  2. the block chains the W composites through shared memory (one barrier), starting from the
//     G carried in from the round above: warp w applies the w composites above its interval to
//     learn the G entering it, and the last warp its own too, to pass on the G leaving the round
//     (about half the work of every warp chaining all W);
//  3. each thread replays its interval's maps from that G and writes grad_x.
// W times the threads of the serial kernel, same bytes: the inputs are staged per thread with
// cp.async, as in the staged forward, a round or more ahead.
//
// The neurons' constants come from make_params(n) (kernels/neuron_params.cuh). With
// NeuronParams (Pointers: BackwardArrays) step 3 also adds each step's share of the parameter
// gradients to the thread's ParamGradSums, as the serial BPTT would (qif_backward_step's
// StepDerivatives): G[t] is the G after the step's map, G[t+1] the G before it, and
// c = dL/dV[t] = g_v + G[t+1] dH[t+1]/dV[t] (g_v + G[T] at t = T-1, G[T] = dL/dV_final), from
// the interval's H kept from step 1 and its x, grad_spikes and grad_v_seq read again from the
// rings (still this round's). After the last round the warps' sums are added through shared
// memory and the first warp writes the gradients. has_grad_v_seq: a flag (compile-time in the
// scalar kernel, run-time in the per-neuron one).
template <SurrogateKind kKind, bool kHardReset, typename X, typename S, typename Sh,
          typename Pointers, typename MakeParams, typename GradVSeq>
__device__ __forceinline__ void segmented_backward(const Pointers& ptr, int64_t steps,
                                                   int64_t inner, int64_t groups,
                                                   const MakeParams& make_params,
                                                   S v_init_value, GradVSeq has_grad_v_seq) {
  constexpr int kVec = Sh::kVec, kChunk = Sh::kChunk;
  static_assert(kChunk == checkpoint_interval(sizeof(X)), "a segment is one checkpoint interval");
  using InputReader = SegmentInputReader<X, Sh>;
  using StateReader = SegmentStateReader<S, Sh>;
  using State = Pack<S, kVec>;
  extern __shared__ __align__(16) unsigned char ring[];
  const int lane = threadIdx.x, segment = threadIdx.y, segments = blockDim.y;
  const int threads = 32 * segments, thread = segment * 32 + lane;
  const int64_t group = static_cast<int64_t>(blockIdx.x) * 32 + lane;
  // Threads past the last group stay for the barriers, reading and writing nothing.
  const bool active = group < groups;
  const int64_t n = active ? group * kVec : 0;
  const auto p = make_params(n);
  constexpr bool kParamGrads = decltype(p)::kPerNeuron;
  const int64_t offset = active ? group_offset(n, steps, inner) : 0;
  const int64_t last = steps - 1;
  const int64_t top_interval = checkpoint_count(steps, kChunk);
  const S* checkpoints = active && top_interval > 0
                             ? static_cast<const S*>(ptr.checkpoints) +
                                   group_offset(n, top_interval, inner)
                             : nullptr;
  const State v_start = initial_state<S, kVec>(active ? ptr.v_init : nullptr, n, v_init_value);
  X* grad_x = static_cast<X*>(ptr.grad_x) + offset;

  unsigned char* ring_x = ring;
  unsigned char* ring_gs = ring_x + InputReader::kStagedBytes * threads;
  unsigned char* ring_gv = ring_gs + InputReader::kStagedBytes * threads;
  // Each round's composites: [decay | drive] x threads, and the G leaving it (32 lanes), two
  // rounds alternating so that one barrier per round suffices.
  State* composites = reinterpret_cast<State*>(
      ring_gv + (has_grad_v_seq ? StateReader::kStagedBytes * threads : 0));
  State* round_exits = composites + 4 * threads;
  const bool has_grad_spikes = ptr.grad_spikes != nullptr;
  // This warp's interval in round r is top_interval - (r W + segment); slot u of it is step
  // t = its top step - u.
  const int64_t first = (top_interval - segment) * kChunk + kChunk - 1;
  const int64_t round_steps = int64_t{segments} * kChunk;
  InputReader xr(active ? static_cast<const X*>(ptr.x) + offset : nullptr, first,
                 active ? steps : 0, inner, ring_x, round_steps);
  InputReader gs(has_grad_spikes && active ? static_cast<const X*>(ptr.grad_spikes) + offset
                                           : nullptr,
                 first, has_grad_spikes && active ? steps : 0, inner, ring_gs, round_steps);
  StateReader gv(has_grad_v_seq && active ? static_cast<const S*>(ptr.grad_v_seq) + offset
                                          : nullptr,
                 first, has_grad_v_seq && active ? steps : 0, inner, ring_gv, round_steps);
  auto fetch = [&](int64_t c) {
    xr.fetch(c);
    gs.fetch(c);
    if (has_grad_v_seq) gv.fetch(c);
  };
  // V entering interval k (its checkpoint, v_init for the first; unused below 0).
  auto entering = [&](int64_t k) {
    return k > 0 && checkpoints ? load_pack<S, kVec>(checkpoints + (k - 1) * inner) : v_start;
  };

  // G entering round 0 (dL/dV_final); in the last warp, G leaving the latest round.
  State carry = active && ptr.grad_v_final
                    ? load_pack<S, kVec>(static_cast<const S*>(ptr.grad_v_final) + n)
                    : zero_pack<S, kVec>();
  ParamGradSums<S> sums[kParamGrads ? kVec : 1];
  const int64_t rounds = (top_interval + segments) / segments;
  for (int c = 0; c < InputReader::kAhead; ++c) {
    fetch(c);
    __pipeline_commit();
  }
  State entry = entering(top_interval - segment);
  for (int64_t r = 0; r < rounds; ++r) {
    fetch(r + InputReader::kAhead);
    const State next_entry = entering(top_interval - segment - (r + 1) * segments);
    staged_commit_and_wait<InputReader::kAhead>();
    const int64_t top = first - r * round_steps;
    // Every step of this thread's interval exists: no per-step checks.
    const bool full = active && top < steps && top - (kChunk - 1) >= 0;
    auto exists = [&](int64_t t, auto all) {
      return decltype(all)::value || (active && t >= 0 && t < steps);
    };

    // 1. H upwards from the entering V; with it the interval's maps, and their composite, the
    // map from the G entering the interval at its top to G at its bottom step.
    S decay[kChunk][kVec], drive[kChunk][kVec];
    S hs[kParamGrads ? kChunk : 1][kVec];  // the interval's H (per-neuron kernel)
    State total_decay, total_drive;
#pragma unroll
    for (int k = 0; k < kVec; ++k) total_decay.v[k] = S(1), total_drive.v[k] = S(0);
    auto maps = [&](auto all) {
      State v = entry;
#pragma unroll
      for (int u = kChunk - 1; u >= 0; --u) {
        const int64_t t = top - u;
        if (!exists(t, all)) {  // below 0 or past T - 1: the identity
#pragma unroll
          for (int k = 0; k < kVec; ++k) decay[u][k] = S(1), drive[u][k] = S(0);
          continue;
        }
        const Pack<X, kVec> x_in = xr.take(r, u);
        const Pack<X, kVec> g_spike = has_grad_spikes ? gs.take(r, u) : zero_pack<X, kVec>();
#pragma unroll
        for (int k = 0; k < kVec; ++k) {
          const S h = qif_charge(v.v[k], S(to_state(x_in.v[k])), p[k]);
          if constexpr (kParamGrads) hs[u][k] = h;  // step 3 remakes the maps from it
          v.v[k] = qif_state_after<kHardReset>(h, p[k]);
          S g_v = S(0);
          if constexpr (kMaybe<GradVSeq>) {
            if (has_grad_v_seq) g_v = gv.take(r, u).v[k];
          }
          qif_backward_affine<kKind, kHardReset>(h, S(to_state(g_spike.v[k])), g_v, t == last,
                                                 p[k], decay[u][k], drive[u][k]);
          // total = total o (this step's map): steps are added below the top ones
          total_drive.v[k] = total_decay.v[k] * drive[u][k] + total_drive.v[k];
          total_decay.v[k] = total_decay.v[k] * decay[u][k];
        }
      }
    };
    if (full) maps(std::true_type{});
    else maps(std::false_type{});
    const State v_entry = entry;  // V[t - 1] of the interval's bottom step (step 3's sums)
    entry = next_entry;
    // 2. Chain the round's composites from the top: the G entering this warp's segment, and in
    // the last warp the G that leaves the round (carried into the next, through shared memory).
    State* round_composites = composites + (r & 1) * 2 * threads;
    round_composites[thread] = total_decay;
    round_composites[threads + thread] = total_drive;
    __syncthreads();
    State g = r == 0 ? carry : round_exits[((r - 1) & 1) * 32 + lane];
    for (int w = 0; w < segment; ++w) {
      const State d = round_composites[w * 32 + lane];
      const State b = round_composites[threads + w * 32 + lane];
#pragma unroll
      for (int k = 0; k < kVec; ++k) g.v[k] = d.v[k] * g.v[k] + b.v[k];
    }
    if (segment == segments - 1) {
#pragma unroll
      for (int k = 0; k < kVec; ++k) carry.v[k] = total_decay.v[k] * g.v[k] + total_drive.v[k];
      round_exits[(r & 1) * 32 + lane] = carry;
    }

    // 3. Replay the segment from its entering G. The per-neuron kernel remakes each step's map
    // from its H (rather than holding the maps beside the H through step 2) and adds the step's
    // share of the parameter gradients.
    auto replay = [&](auto all) {
#pragma unroll
      for (int u = 0; u < kChunk; ++u) {
        const int64_t t = top - u;
        if (!exists(t, all)) continue;  // the top interval may reach past T - 1
        Pack<X, kVec> gx;
#pragma unroll
        for (int k = 0; k < kVec; ++k) {
          if constexpr (kParamGrads) {
            const QifParams<S>& q = p[k];
            const S h = hs[u][k];
            const S x_in = S(to_state(xr.take(r, u).v[k]));
            const S g_spike = has_grad_spikes ? S(to_state(gs.take(r, u).v[k])) : S(0);
            S g_v = S(0);
            if (has_grad_v_seq) g_v = gv.take(r, u).v[k];
            S step_decay, step_drive;
            qif_backward_affine<kKind, kHardReset>(h, g_spike, g_v, t == last, q, step_decay,
                                                   step_drive);
            const S g_above = g.v[k];  // G[t + 1]
            g.v[k] = step_decay * g_above + step_drive;
            // dL/dV[t]: g_v, and G[t + 1] through dH[t + 1]/dV[t] (dL/dV_final at T - 1)
            const S v_t = qif_state_after<kHardReset>(h, q);
            const S c = g_v + (t == last ? g_above : g_above * qif_dh_dv(v_t, q));
            // V[t - 1]: after the step below, or entering the interval at its bottom step
            const S v_prev =
                u + 1 < kChunk ? qif_state_after<kHardReset>(hs[u + 1][k], q) : v_entry.v[k];
            const StepDerivatives<S> d{g.v[k], c, qif_surrogate_grad<kKind>(h, q),
                                       qif_fires(h, q)};
            sums[k].template add<kHardReset>(d, h, v_prev, x_in, g_spike, q, p.values(k));
          } else {
            g.v[k] = decay[u][k] * g.v[k] + drive[u][k];
          }
          gx.v[k] = from_state<X>(g.v[k] * p[k].inv_tau);
        }
        store_pack(grad_x + t * inner, gx);
      }
    };
    if (full) replay(std::true_type{});
    else replay(std::false_type{});
  }
  // The last warp's carry is now G[0] (steps below 0 are identities).
  if (ptr.grad_v_init && active && segment == segments - 1) {
    const State v_start = initial_state<S, kVec>(ptr.v_init, n, v_init_value);
    State grad_v_init;
#pragma unroll
    for (int k = 0; k < kVec; ++k) grad_v_init.v[k] = carry.v[k] * qif_dh_dv(v_start.v[k], p[k]);
    store_pack(static_cast<S*>(ptr.grad_v_init) + n, grad_v_init);
  }
  if constexpr (kParamGrads) {
    // Each lane's sums over the W warps, in warp order (the same bits every run), through the
    // start of shared memory, once no copy is in flight and every thread is done with the rings
    // and composites: 6 kVec values per thread, within the 6 States per thread of composites
    // and round exits alone (segmented_shared_bytes).
    static_assert(kParamGradSumFields * kVec * sizeof(S) <= 6 * sizeof(State),
                  "the warps' parameter sums fit the shared memory of the composites");
    __pipeline_wait_prior(0);
    __syncthreads();
    S* partial = reinterpret_cast<S*>(ring);
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      for_each_sum(sums[k], [&](int f, S& value) {
        partial[(f * kVec + k) * threads + thread] = value;
      });
    }
    __syncthreads();
    if (segment == 0 && active) {
      ParamGradSums<S> total[kVec];
#pragma unroll
      for (int k = 0; k < kVec; ++k) {
        for_each_sum(total[k], [&](int f, S& value) {
          const S* column = partial + (f * kVec + k) * threads + lane;
          for (int w = 0; w < segments; ++w) value += column[w * 32];
        });
      }
      store_param_grads(ptr.grads, n, total, make_params);
    }
  }
}

// Every neuron with the call's constants; one instance with grad_v_seq and one without.
template <SurrogateKind kKind, bool kHardReset, bool kHasGradVSeq, typename X, typename S,
          typename Sh>
__global__ void __launch_bounds__(32 * kMaxSegments, 32 / kMaxSegments)
    segmented_backward_kernel(BackwardPointers ptr, int64_t steps, int64_t inner, int64_t groups,
                              QifParams<S> p, S v_init_value) {
  segmented_backward<kKind, kHardReset, X, S, Sh>(ptr, steps, inner, groups,
                                                  SharedParamsOf<S>{p}, v_init_value,
                                                  Fixed<kHasGradVSeq>{});
}

// Some parameter given as an array: each neuron's constants (NeuronParams) and its parameter
// gradients; grad_v_seq chosen at run time. Its constants, H and sums beside the maps would
// spill at the scalar kernel's 64 registers: compiled for one block per multiprocessor, of
// kMaxSegments warps (128 registers), or of 8 for float64 (255; at 128 it spills).
template <SurrogateKind kKind, bool kHardReset, typename X, typename S, typename Sh>
__global__ void __launch_bounds__(32 * kPerNeuronMaxSegments<S>, 1)
    per_neuron_segmented_backward_kernel(BackwardArrays ptr, int64_t steps, int64_t inner,
                                         int64_t groups, QifParams<S> shared, S v_init_value,
                                         NeuronValues<S> numbers) {
  segmented_backward<kKind, kHardReset, X, S, Sh>(
      ptr, steps, inner, groups, NeuronParamsOf<S, Sh::kVec>{ptr.params, numbers, shared},
      v_init_value, ptr.grad_v_seq != nullptr);
}

}  // namespace jaxqif::gpu
