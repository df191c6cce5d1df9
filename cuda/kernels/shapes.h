// The compile-time shapes that the kernels are instantiated with and the launch plans
// (launch/plan.h) choose between: what both sides must agree on. Plain C++, no include: it
// serves the kernel headers and the host-only plans alike.
#pragma once

namespace jaxqif::gpu {

// Shapes of one launch: kVec neurons per thread, kChunk steps per chunk, staged or not.
template <int kVecValue, int kChunkValue, bool kStagedValue>
struct Shape {
  static constexpr int kVec = kVecValue;
  static constexpr int kChunk = kChunkValue;
  static constexpr bool kStaged = kStagedValue;
};

// Shared-memory ring depth (chunks) of each stream of the staged plans, kSlots - 1 of them in
// flight while one is computed, and of the segmented backward.
constexpr int kSlots = 4;
constexpr int kSegmentSlots = 3;

// Bytes of shared memory per thread of one staged stream: `slots` chunks of `chunk` steps of
// `vec` values of `value_bytes` each (kernels/stream_io.cuh's StreamReader::kStagedBytes).
constexpr int staged_stream_bytes(int slots, int chunk, int vec, int value_bytes) {
  return slots * chunk * vec * value_bytes;
}

// Shared memory per thread of the staged forward (the ring of x) with shape Sh.
template <typename X, typename Sh>
constexpr int kForwardStagedBytes =
    Sh::kStaged ? staged_stream_bytes(kSlots, Sh::kChunk, Sh::kVec, sizeof(X)) : 0;

// Shared memory per thread of segmented_backward_kernel: the rings of x, grad_spikes (and
// grad_v_seq), two rounds of composites (decay and drive), and two more values per thread, of
// which the first 2 x 32 hold the G passed from one round to the next (two rounds alternating).
template <typename X, typename S, typename Sh>
constexpr int segmented_shared_bytes(bool has_grad_v_seq) {
  return staged_stream_bytes(kSegmentSlots, Sh::kChunk, Sh::kVec, sizeof(X)) * 2 +
         staged_stream_bytes(kSegmentSlots, Sh::kChunk, Sh::kVec, sizeof(S)) * has_grad_v_seq +
         6 * Sh::kVec * static_cast<int>(sizeof(S));
}

// The segmented backward: most segments (warps) per block (16: a 16-bit layer of 2^14 neurons,
// two per thread, fills the GPU only with that many).
constexpr int kMaxSegments = 16;
// With per-neuron parameters, at most kMaxSegments warps (128 registers), or 8 for float64
// (255; at 128 it spills).
template <typename S>
constexpr int kPerNeuronMaxSegments = sizeof(S) == 8 ? kMaxSegments / 2 : kMaxSegments;

// The bulk forward (kernels/bulk_forward_kernel.cuh): kBulkWarps compute warps walk kBulkNeurons
// adjacent neurons of one row, one per thread, and one copy warp moves the data.
constexpr int kBulkWarps = 4;
constexpr int kBulkNeurons = 32 * kBulkWarps;
constexpr int kBulkThreads = kBulkNeurons + 32;  // and the copy warp

// The bulk forward's rings: kSlots chunks of kChunk steps of x, kOutSlots of spikes.
template <int kChunkValue, int kSlotsValue, int kOutSlotsValue>
struct BulkShape {
  static constexpr int kChunk = kChunkValue;
  static constexpr int kSlots = kSlotsValue;
  static constexpr int kOutSlots = kOutSlotsValue;
  // One chunk's box in shared memory: kChunk rows of the block's neurons.
  template <typename X>
  static constexpr int kChunkBytes = kChunk * kBulkNeurons * static_cast<int>(sizeof(X));
  static constexpr int kBarrierBytes = 2 * (kSlots + kOutSlots) * 8;  // full and free per slot
  template <typename X>
  static constexpr int kSharedBytes = (kSlots + kOutSlots) * kChunkBytes<X> + kBarrierBytes;
};

}  // namespace jaxqif::gpu
