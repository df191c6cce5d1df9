// What every kernel uses to move data: conversions between the input and state types on the
// device, packs of kVec adjacent neurons moved with the widest aligned access, prefetching reads
// of one [outer, T, inner] stream (StreamReader, for_each_chunk), and where a thread's neurons
// start. Streams are touched once per kernel: loads and stores use evict-first hints.
//
// Device code only, with no host-only include: a kernel header (see cuda/README.md).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_pipeline.h>

#include "std_headers.h"

#include "kernels/shapes.h"

namespace jaxqif::gpu {

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

// ---------------------------------------------------------------------------------------------
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

// ---------------------------------------------------------------------------------------------
// Prefetching reads of one [outer, T, inner] stream.

// Reads one stream for this thread's neurons, in chunks of kChunk steps: slot u of chunk c is
// step first + kDirection * (c * stride + u), stride = kChunk unless given (the segmented
// backward's chunks are W * kChunk steps apart). Steps outside [0, T) are never read. The kernel
// calls fetch(c + kAhead) before it takes the values of chunk c, then next_chunk().
//  kStaged = false: two register buffers of kChunk values: chunk c + 1 loads while chunk c is
//    computed (kAhead = 1).
//  kStaged = true: whole chunks are copied asynchronously (cp.async) into kRingSlots chunk slots
//    of shared memory, kAhead = kRingSlots - 1 chunks ahead of the one being computed, far
//    deeper than registers allow. The slots are private to the thread (no other thread reads
//    them), so no barrier is needed; the kernel commits each chunk's copies and waits for them
//    (staged_commit_and_wait).
template <bool kStaged, int kDirection, int kChunk, typename T, int kVec, int kRingSlots = kSlots>
class StreamReader {
 public:
  using Value = Pack<T, kVec>;
  static constexpr int kAhead = kStaged ? kRingSlots - 1 : 1;
  // Bytes of shared memory per thread in the staged plans.
  static constexpr int kStagedBytes = staged_stream_bytes(kRingSlots, kChunk, kVec, sizeof(T));
  static_assert(sizeof(Value) == kVec * sizeof(T), "a Pack is its values, unpadded");

  // base: this thread's element at step 0 of the stream (nullptr with steps = 0: nothing read).
  // ring: the block's ring of this stream, one column per thread.
  __device__ StreamReader(const T* base, int64_t first, int64_t steps, int64_t inner,
                          unsigned char* ring, int64_t stride = kChunk)
      : base_(base), first_(first), steps_(steps), inner_(inner), stride_(stride),
        threads_(blockDim.x * blockDim.y),
        ring_(static_cast<uint32_t>(__cvta_generic_to_shared(ring)) +
              (threadIdx.y * blockDim.x + threadIdx.x) * static_cast<uint32_t>(sizeof(Value))) {}

  // Starts the loads of chunk c: into the second register buffer, or into its ring slot.
  __device__ __forceinline__ void fetch(int64_t chunk) {
    const int64_t t0 = first_ + kDirection * chunk * stride_;
    const int64_t t_last = t0 + kDirection * (kChunk - 1);
    const T* p = base_ + t0 * inner_;
    const int64_t stride = kDirection * inner_;
    if (in_range(t0) && in_range(t_last)) {  // a whole chunk: no per-step checks
#pragma unroll
      for (int u = 0; u < kChunk; ++u) load(chunk, u, p + u * stride);
    } else {
#pragma unroll
      for (int u = 0; u < kChunk; ++u) {
        if (in_range(t0 + kDirection * u)) load(chunk, u, p + u * stride);
      }
    }
  }

  // The value of slot u of chunk c (its step must be in range).
  __device__ __forceinline__ Value take(int64_t chunk, int u) const {
    if constexpr (kStaged) return *slot(chunk, u);
    else return current_[u];
  }

  __device__ __forceinline__ void next_chunk() {
    if constexpr (!kStaged) {
#pragma unroll
      for (int u = 0; u < kChunk; ++u) current_[u] = next_[u];
    }
  }

 private:
  __device__ __forceinline__ bool in_range(int64_t t) const { return t >= 0 && t < steps_; }

  __device__ __forceinline__ void load(int64_t chunk, int u, const T* src) {
    if constexpr (kStaged) __pipeline_memcpy_async(slot(chunk, u), src, sizeof(Value));
    else next_[u] = load_pack<T, kVec>(src);
  }

  // Slot u of chunk c in this thread's column of the ring: consecutive threads read
  // consecutive addresses, free of bank conflicts. (Its address is computed in 32 bits, as a
  // shared-memory address: nvcc does that by itself, NVRTC keeps generic 64-bit arithmetic and
  // has no option against it; benchmarks/NOTES.md, "Run-time compiled kernels and 32-bit shared
  // addresses".)
  __device__ __forceinline__ Value* slot(int64_t chunk, int u) const {
    const uint32_t slot_index = static_cast<uint32_t>(chunk) % kRingSlots;
    const uint32_t offset = (slot_index * kChunk + u) * threads_ * uint32_t{sizeof(Value)};
    return static_cast<Value*>(__cvta_shared_to_generic(ring_ + offset));
  }

  const T* base_;
  int64_t first_, steps_, inner_, stride_;
  uint32_t threads_;
  uint32_t ring_;  // this thread's column of the ring, as a shared-memory address
  Value current_[kStaged ? 1 : kChunk];
  Value next_[kStaged ? 1 : kChunk];
};

// Closes the group of copies just fetched and waits until the chunk about to be computed has
// landed, kAhead chunks being in flight (staged plans only).
template <int kAhead>
__device__ __forceinline__ void staged_commit_and_wait() {
  __pipeline_commit();
  __pipeline_wait_prior(kAhead);
}

// Calls body(c, full) for chunk c = 0, 1, ...: full (a std::integral_constant) says all kChunk
// steps of the chunk are in [0, T), so the body needs no per-step check. fetch(c) fetches
// chunk c of every reader; the prefetch pipeline runs around the body.
template <bool kStaged, int kChunk, int kAhead, typename Fetch, typename Next, typename Body>
__device__ __forceinline__ void for_each_chunk(int64_t steps, Fetch&& fetch, Next&& next_chunk,
                                               Body&& body) {
  for (int c = 0; c < kAhead; ++c) {
    fetch(c);
    if constexpr (kStaged) __pipeline_commit();
  }
  next_chunk();  // registers: chunk 0 becomes current
  const int64_t chunks = (steps + kChunk - 1) / kChunk;
  for (int64_t c = 0; c < chunks; ++c) {
    fetch(c + kAhead);
    if constexpr (kStaged) staged_commit_and_wait<kAhead>();
    if ((c + 1) * kChunk <= steps) {
      body(c, std::true_type{});
    } else {
      body(c, std::false_type{});
    }
    next_chunk();
  }
}

// Offset of element (o, 0, i) for the first neuron n = o * inner + i of this thread's group.
// inner is a multiple of kVec, so a group never straddles two rows.
__device__ __forceinline__ int64_t group_offset(int64_t n, int64_t steps, int64_t inner) {
  const int64_t o = n / inner;
  return o * steps * inner + (n - o * inner);
}

// Every neuron's initial potential in this thread's group.
template <typename S, int kVec>
__device__ __forceinline__ Pack<S, kVec> initial_state(const void* v_init, int64_t n,
                                                        S v_init_value) {
  if (v_init) return load_pack<S, kVec>(static_cast<const S*>(v_init) + n);
  Pack<S, kVec> r;
#pragma unroll
  for (int k = 0; k < kVec; ++k) r.v[k] = v_init_value;
  return r;
}

}  // namespace jaxqif::gpu
