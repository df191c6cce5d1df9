// Launch plans: which kernel shape a call gets, from its layout, its buffers' alignment and the
// device's properties. Host-only and free of CUDA headers: the properties come in as a plain
// DeviceProperties (launch/launch.cuh reads them from the device), so that the choices can be
// checked on a machine without a GPU (tests/test_launch_plan.py).
//
// The plans, chosen per call (choose_plan, then launch_forward or launch_backward):
//  * wide: 16 bytes of the widest stream per step per thread, when there are enough neurons to
//    fill the GPU; short sequences need the wide accesses to keep enough bytes in flight;
//  * narrow: one neuron per thread when groups of 16 bytes do not fit the layout;
//  * staged deep / staged shallow (forward): too few neurons to fill the GPU (long sequences of
//    a small layer). Each thread then prefetches whole chunks of steps into shared memory with
//    asynchronous copies, far deeper than registers allow;
//  * bulk deep / bulk shallow (forward, Hopper and later): the staged plans' layouts, with the
//    Tensor Memory Accelerator copying a block's chunk of x in and of spikes out as one box,
//    issued by a copy warp;
//  * segmented (backward, same layouts): the time axis split over several warps, whose affine
//    pieces of the BPTT recurrence are chained through shared memory;
//  * narrow long: few neurons that cannot be staged, one per thread with long register chunks.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "kernels/shapes.h"
#include "qif_buffers.h"
#include "qif_math.h"

namespace jaxqif::gpu {

enum class Plan { kWide, kNarrow, kNarrowLong, kStagedDeep, kStagedShallow, kSegmented };

// What the plans need to know of the device. The defaults are what is assumed of a property
// that cannot be read: an H100's multiprocessor count, 48 KB of shared memory (what every device
// gives a block without opting in), 1024 threads, and no bulk copies.
struct DeviceProperties {
  int multiprocessors = 132;
  // The most shared memory one block may opt in to (99 KB on some GPUs, 227 KB on the H100 and
  // H200).
  size_t max_shared_per_block = 48 * 1024;
  size_t shared_per_multiprocessor = 48 * 1024;
  int threads_per_multiprocessor = 1024;
  int compute_capability_major = 0;
};

// Neurons per thread: the wide forward moves 16 bytes of x per step; the wide backward 8 bytes
// of each input-typed stream (x, grad_spikes, grad_x), as it holds a whole interval of three
// of them in registers; the staged plans need at least 4 bytes for an asynchronous copy (two
// neurons of a 16-bit type).
template <typename X>
constexpr int kWideVec = 16 / static_cast<int>(sizeof(X));
template <typename X>
constexpr int kBackwardWideVec = 8 / static_cast<int>(sizeof(X));

// Sequences of at most kShortSteps steps (a static input repeated a few times, say) give the
// backward one interval per thread and nothing to prefetch: its bytes in flight are only what
// the threads hold. The wide backward then works chunks of kShortSteps steps and, for float32,
// 16 bytes per stream (4 neurons: 96 registers; 16-bit inputs already move 8 bytes in chunks of
// 4 steps, float64 would spill).
constexpr int kShortSteps = 4;
template <typename X>
constexpr int kBackwardShortVec = std::is_same_v<X, float> ? 4 : kBackwardWideVec<X>;

// Neurons per thread of the wide backward over `steps` steps.
template <typename X>
int backward_wide_vec(int64_t steps) {
  return steps <= kShortSteps ? kBackwardShortVec<X> : kBackwardWideVec<X>;
}
template <typename X>
constexpr int kStagedVec = sizeof(X) < 4 ? 4 / static_cast<int>(sizeof(X)) : 1;

struct LaunchPlan {
  Plan plan;
  int vec;  // neurons per thread
  int64_t groups;
  int threads_per_block;
  int segments = 1;  // warps sharing one group's time axis (segmented plan)
  // A block is groups_per_block() x segments threads.
  int groups_per_block() const { return threads_per_block / segments; }
  unsigned int blocks() const {
    const int64_t groups_per_block = threads_per_block / segments;
    return static_cast<unsigned int>((groups + groups_per_block - 1) / groups_per_block);
  }
};

// Threads per multiprocessor that keep it busy with one neuron per thread and register
// prefetching. Below that the GPU is not filled: long sequences of a small layer.
constexpr int64_t kThreadsToFill = 1024;

// wide_vec / staged_vec: neurons per thread of those plans; aligned: every buffer 16-byte
// aligned.
//  * wide: groups that never straddle a row, and enough of them to fill every multiprocessor;
//  * narrow: enough neurons to fill the GPU one per thread;
//  * fewer: the backward splits the time axis over up to kMaxSegments warps (segmented), as
//    many as it takes to fill the GPU. The forward cannot (its recurrence is not affine), so
//    every thread lives for the whole sequence and blocks should all be resident at once,
//    spread over every multiprocessor in small blocks: staged (a 16-bit type two neurons per
//    thread), deep below 1/8 of the filling thread count, shallow above. Layouts that cannot
//    be staged (odd innermost size for a 16-bit type, misaligned) keep one neuron per thread
//    with long register chunks (narrow long), in the backward too.
inline LaunchPlan choose_plan(const Layout& l, int wide_vec, int staged_vec, bool aligned,
                              bool backward, const DeviceProperties& device) {
  const int64_t sms = device.multiprocessors;
  const int64_t filling = sms * kThreadsToFill;
  const int64_t neurons = l.neurons();
  if (aligned && l.inner % wide_vec == 0 && neurons / wide_vec >= filling) {
    return {Plan::kWide, wide_vec, neurons / wide_vec, 128};
  }
  if (neurons >= filling) return {Plan::kNarrow, 1, neurons, 128};
  const bool stageable = aligned && l.inner % staged_vec == 0;
  if (backward && stageable) {
    const int64_t groups = neurons / staged_vec;
    const int segments = static_cast<int>(std::clamp<int64_t>(filling / groups, 1, kMaxSegments));
    return {Plan::kSegmented, staged_vec, groups, 32 * segments, segments};
  }
  const bool deep = neurons <= filling / 8;  // forward only, from here
  const int vec = stageable ? staged_vec : 1;
  const int64_t groups = neurons / vec;
  const int threads = groups < sms * 256 ? 32 : groups < sms * 512 ? 64 : 128;
  const Plan plan =
      !stageable ? Plan::kNarrowLong : deep ? Plan::kStagedDeep : Plan::kStagedShallow;
  return {plan, vec, groups, threads};
}

// The plan of a call with per-neuron parameters: the narrow one where the scalar kernels would
// take the wide one. A thread folds and holds each of its neurons' constants (and in the backward
// their gradient sums) in registers: in groups of 4-8 neurons that made the per-neuron kernels
// register-bound, at 2 blocks per multiprocessor (benchmarks/NOTES.md, "Per-neuron kernels: one
// neuron per thread").
inline LaunchPlan per_neuron_plan(const LaunchPlan& plan) {
  if (plan.plan != Plan::kWide) return plan;
  return {Plan::kNarrow, 1, plan.groups * plan.vec, 128};
}
// The kernel shapes per_neuron_plan can give (all but the wide ones): the only per-neuron
// kernel instances built.
template <typename Sh>
constexpr bool kPerNeuronShape = Sh::kVec == 1 || Sh::kStaged;

// The segmented plan with as many segments (warps per block) as the device's shared memory
// per block holds: every segment adds 32 threads' rings and composites.
inline LaunchPlan fit_segments(LaunchPlan plan, size_t shared_bytes_per_thread,
                               const DeviceProperties& device) {
  while (plan.segments > 1 &&
         shared_bytes_per_thread * 32 * plan.segments > device.max_shared_per_block) {
    --plan.segments;
    plan.threads_per_block = 32 * plan.segments;
  }
  return plan;
}

// Calls fn.template operator()<Sh>() and returns true (a plan has a kernel of shape Sh).
template <typename Sh, typename Fn>
bool call_with_shape(Fn& fn) {
  fn.template operator()<Sh>();
  return true;
}

// Calls fn.template operator()<Shape<kVec, kChunk, kStaged>>() for a forward plan and returns
// true; returns false, calling nothing, for the segmented plan, which the forward has no kernel
// for (choose_plan never gives it to the forward).
template <typename X, typename Fn>
bool dispatch_forward_plan(Plan plan, Fn&& fn) {
  switch (plan) {
    case Plan::kWide: return call_with_shape<Shape<kWideVec<X>, 4, false>>(fn);
    case Plan::kNarrow: return call_with_shape<Shape<1, 8, false>>(fn);
    case Plan::kNarrowLong: return call_with_shape<Shape<1, 32, false>>(fn);
    case Plan::kStagedDeep: return call_with_shape<Shape<kStagedVec<X>, 32, true>>(fn);
    case Plan::kStagedShallow: return call_with_shape<Shape<kStagedVec<X>, 8, true>>(fn);
    case Plan::kSegmented: break;
  }
  return false;
}

// The same for a backward plan, which works one checkpoint interval at a time (short sequences
// in the wide plan: one chunk of kShortSteps); false for the staged plans, the forward's only.
template <typename X, typename Fn>
bool dispatch_backward_plan(Plan plan, int64_t steps, Fn&& fn) {
  constexpr int kInterval = checkpoint_interval(sizeof(X));
  switch (plan) {
    case Plan::kWide:
      if (steps <= kShortSteps) {
        return call_with_shape<Shape<kBackwardShortVec<X>, kShortSteps, false>>(fn);
      }
      return call_with_shape<Shape<kBackwardWideVec<X>, kInterval, false>>(fn);
    case Plan::kSegmented: return call_with_shape<Shape<kStagedVec<X>, kInterval, true>>(fn);
    case Plan::kNarrow:
    case Plan::kNarrowLong: return call_with_shape<Shape<1, kInterval, false>>(fn);
    case Plan::kStagedDeep:
    case Plan::kStagedShallow: break;
  }
  return false;
}

// The bulk forward's rings, per input type (measured, benchmarks/NOTES.md, "The bulk forward:
// the Tensor Memory Accelerator copies the staged plans' chunks" and "The bulk forward: a copy
// warp, staggered first boxes, the slope carried"): 4 slots of x and 2 of spikes. Deep (about
// one block per multiprocessor): chunks of 128 bytes per neuron (64 steps of 16-bit inputs, 32
// of float32; 96 KB). Shallow: chunks of 64 bytes per neuron, 48 KB per block, so that four
// blocks share a multiprocessor.
template <typename X>
using BulkDeep = BulkShape<128 / static_cast<int>(sizeof(X)), 4, 2>;
template <typename X>
using BulkShallow = BulkShape<64 / static_cast<int>(sizeof(X)), 4, 2>;

// How many blocks of the bulk forward, with `shared` bytes of shared memory each, the device
// holds at once (every block lives for the whole sequence, so all must be resident).
inline int64_t bulk_resident_blocks(size_t shared, const DeviceProperties& device) {
  const int64_t per_multiprocessor =
      std::min<int64_t>(device.shared_per_multiprocessor / (shared + 1024),  // 1 KB reserved
                        device.threads_per_multiprocessor / kBulkThreads);
  return device.multiprocessors * per_multiprocessor;
}

}  // namespace jaxqif::gpu
