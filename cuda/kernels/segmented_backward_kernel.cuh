// The segmented (time-parallel) backward kernel, for layouts with too few neurons to fill the
// GPU: the time axis split over several warps, whose affine pieces of the BPTT recurrence are
// chained through shared memory.
//
// Device code only, with no host-only include: a kernel header (see cuda/README.md).
#pragma once

#include <cuda_pipeline.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "kernels/shapes.h"
#include "kernels/stream_io.cuh"
#include "qif_buffers.h"
#include "qif_math.h"

namespace jaxqif::gpu {

// The segmented plan: a segment is one checkpoint interval, so that each warp starts its
// recomputation of H from a checkpoint; shared-memory ring depth (the most segments per block,
// kMaxSegments, is in kernels/shapes.h).
constexpr int kSegmentSlots = 3;

template <typename X, typename Sh>
using SegmentInputReader = StreamReader<true, -1, Sh::kChunk, X, Sh::kVec, kSegmentSlots>;
template <typename S, typename Sh>
using SegmentStateReader = StreamReader<true, -1, Sh::kChunk, S, Sh::kVec, kSegmentSlots>;

// Shared memory per thread of segmented_backward_kernel: the rings of x, grad_spikes (and
// grad_v_seq), two rounds of composites (decay and drive), and two more values per thread, of
// which the first 2 x 32 hold the G passed from one round to the next (two rounds alternating).
template <typename X, typename S, typename Sh>
constexpr size_t segmented_shared_bytes(bool has_grad_v_seq) {
  return SegmentInputReader<X, Sh>::kStagedBytes * 2 +
         SegmentStateReader<S, Sh>::kStagedBytes * has_grad_v_seq +
         6 * sizeof(Pack<S, Sh::kVec>);
}

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
template <SurrogateKind kKind, bool kHardReset, bool kHasGradVSeq, typename X, typename S,
          typename Sh>
__global__ void __launch_bounds__(32 * kMaxSegments, 32 / kMaxSegments)
    segmented_backward_kernel(BackwardPointers ptr, int64_t steps, int64_t inner, int64_t groups,
                              QifParams<S> p, S v_init_value) {
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
      ring_gv + (kHasGradVSeq ? StateReader::kStagedBytes * threads : 0));
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
  StateReader gv(kHasGradVSeq && active ? static_cast<const S*>(ptr.grad_v_seq) + offset : nullptr,
                 first, kHasGradVSeq && active ? steps : 0, inner, ring_gv, round_steps);
  auto fetch = [&](int64_t c) {
    xr.fetch(c);
    gs.fetch(c);
    if constexpr (kHasGradVSeq) gv.fetch(c);
  };
  // V entering interval k (its checkpoint, v_init for the first; unused below 0).
  auto entering = [&](int64_t k) {
    return k > 0 && checkpoints ? load_pack<S, kVec>(checkpoints + (k - 1) * inner) : v_start;
  };

  // G entering round 0 (dL/dV_final); in the last warp, G leaving the latest round.
  State carry = active && ptr.grad_v_final
                    ? load_pack<S, kVec>(static_cast<const S*>(ptr.grad_v_final) + n)
                    : zero_pack<S, kVec>();
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
          const S h = qif_charge(v.v[k], S(to_state(x_in.v[k])), p);
          v.v[k] = qif_state_after<kHardReset>(h, p);
          S g_v = S(0);
          if constexpr (kHasGradVSeq) g_v = gv.take(r, u).v[k];
          qif_backward_affine<kKind, kHardReset>(h, S(to_state(g_spike.v[k])), g_v, t == last, p,
                                                 decay[u][k], drive[u][k]);
          // total = total o (this step's map): steps are added below the top ones
          total_drive.v[k] = total_decay.v[k] * drive[u][k] + total_drive.v[k];
          total_decay.v[k] = total_decay.v[k] * decay[u][k];
        }
      }
    };
    if (full) maps(std::true_type{});
    else maps(std::false_type{});
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

    // 3. Replay the segment from its entering G.
    auto replay = [&](auto all) {
#pragma unroll
      for (int u = 0; u < kChunk; ++u) {
        const int64_t t = top - u;
        if (!exists(t, all)) continue;  // the top interval may reach past T - 1
        Pack<X, kVec> gx;
#pragma unroll
        for (int k = 0; k < kVec; ++k) {
          g.v[k] = decay[u][k] * g.v[k] + drive[u][k];
          gx.v[k] = from_state<X>(g.v[k] * p.inv_tau);
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
    for (int k = 0; k < kVec; ++k) grad_v_init.v[k] = carry.v[k] * qif_dh_dv(v_start.v[k], p);
    store_pack(static_cast<S*>(ptr.grad_v_init) + n, grad_v_init);
  }
}

}  // namespace jaxqif::gpu
