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

// The segmented backward: most segments (warps) per block (16: a 16-bit layer of 2^14 neurons,
// two per thread, fills the GPU only with that many).
constexpr int kMaxSegments = 16;

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
