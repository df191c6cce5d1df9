// Fused CUDA forward and BPTT kernels of the QIF neuron, and the host code that launches them.
//
// One thread walks a group of kVec adjacent neurons through all T steps (the segmented backward
// splits them). The recurrence is serial, but the loads it consumes (x[t]; in the backward
// grad_spikes[t] and grad_v_seq[t] too) do not depend on it, so they are issued well ahead of
// the step that needs them (see StreamReader). Under differentiation the forward saves V every
// few steps (checkpoint_interval, qif_math.h), and the backward recomputes H from those
// checkpoints and x rather than reading a stored H. Streams are touched once per kernel: loads
// and stores use evict-first hints.
//
// Launch plans, chosen per call (choose_plan, then launch_forward):
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
// The backward is compiled once per surrogate, each in its own translation unit
// (qif_cuda_backward.cu), so the library builds in parallel.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_pipeline.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>  // the driver's tensor-map encoder

#include <algorithm>
#include <cstdint>
#include <cuda/ptx>
#include <type_traits>

#include "qif_ffi.h"
#include "qif_math.h"

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

// Shared-memory ring depth of the staged plans: kSlots - 1 chunks are in flight while one is
// computed.
constexpr int kSlots = 4;

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
  static constexpr int kStagedBytes = kRingSlots * kChunk * static_cast<int>(sizeof(Value));

  // base: this thread's element at step 0 of the stream (nullptr with steps = 0: nothing read).
  // ring: the block's ring of this stream, one column per thread.
  __device__ StreamReader(const T* base, int64_t first, int64_t steps, int64_t inner,
                          unsigned char* ring, int64_t stride = kChunk)
      : base_(base), first_(first), steps_(steps), inner_(inner), stride_(stride),
        threads_(blockDim.x * blockDim.y),
        ring_(reinterpret_cast<Value*>(ring) + threadIdx.y * blockDim.x + threadIdx.x) {}

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
  // consecutive addresses, free of bank conflicts.
  __device__ __forceinline__ Value* slot(int64_t chunk, int u) const {
    const int slot_index = static_cast<int>(static_cast<uint32_t>(chunk) % kRingSlots);
    return ring_ + (slot_index * kChunk + u) * threads_;
  }

  const T* base_;
  int64_t first_, steps_, inner_, stride_;
  int threads_;
  Value* ring_;
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

// Shapes of one launch: kVec neurons per thread, kChunk steps per chunk, staged or not.
template <int kVecValue, int kChunkValue, bool kStagedValue>
struct Shape {
  static constexpr int kVec = kVecValue;
  static constexpr int kChunk = kChunkValue;
  static constexpr bool kStaged = kStagedValue;
};

// ---------------------------------------------------------------------------------------------
// Kernels

struct ForwardPointers {
  const void* x;
  const void* v_init;  // nullptr: every neuron starts at v_init_value
  void* spikes;
  void* v_final;      // nullptr when not wanted
  void* v_seq;        // nullptr when not stored
  void* checkpoints;  // nullptr when not saved (or none to save: a single interval)
};

struct BackwardPointers {
  const void* grad_spikes;   // nullptr when symbolically zero
  const void* grad_v_seq;    // nullptr when symbolically zero
  const void* grad_v_final;  // nullptr when symbolically zero
  const void* x;
  const void* checkpoints;  // nullptr when there is a single interval
  const void* v_init;       // nullptr: every neuron starts at v_init_value
  void* grad_x;
  void* grad_v_init;  // nullptr when v_init is not differentiated
};

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

// kCheckpoints: V is saved every checkpoint_interval steps; kVSeq: every step (compile-time, so
// that inference carries no per-step work for what it does not write).
template <typename X, typename S, bool kHardReset, bool kCheckpoints, bool kVSeq, typename Sh>
__global__ void __launch_bounds__(128)
    forward_kernel(ForwardPointers ptr, int64_t steps, int64_t inner, int64_t groups,
                   QifParams<S> p, S v_init_value) {
  constexpr int kVec = Sh::kVec, kChunk = Sh::kChunk;
  extern __shared__ __align__(16) unsigned char ring[];
  const int64_t group = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (group >= groups) return;
  const int64_t n = group * kVec;
  const int64_t offset = group_offset(n, steps, inner);
  X* spikes = static_cast<X*>(ptr.spikes) + offset;
  S* v_seq = kVSeq ? static_cast<S*>(ptr.v_seq) + offset : nullptr;
  constexpr int kInterval = checkpoint_interval(sizeof(X));
  S* checkpoints = kCheckpoints ? static_cast<S*>(ptr.checkpoints) +
                                      group_offset(n, checkpoint_count(steps, kInterval), inner)
                                : nullptr;

  using Reader = StreamReader<Sh::kStaged, 1, kChunk, X, kVec>;
  Reader x(static_cast<const X*>(ptr.x) + offset, 0, steps, inner, ring);
  Pack<S, kVec> v = initial_state<S, kVec>(ptr.v_init, n, v_init_value);
  for_each_chunk<Sh::kStaged, kChunk, Reader::kAhead>(
      steps, [&](int64_t c) { x.fetch(c); }, [&] { x.next_chunk(); },
      [&](int64_t c, auto full) {
#pragma unroll
        for (int u = 0; u < kChunk; ++u) {
          const int64_t t = c * kChunk + u;
          if (!decltype(full)::value && t >= steps) break;
          const Pack<X, kVec> current = x.take(c, u);
          Pack<X, kVec> spike_out;
#pragma unroll
          for (int k = 0; k < kVec; ++k) {
            const S h = qif_charge(v.v[k], S(to_state(current.v[k])), p);
            const bool spike = qif_fires(h, p);
            spike_out.v[k] = from_state<X>(spike ? S(1) : S(0));
            v.v[k] = qif_reset<kHardReset>(h, spike, p);
          }
          store_pack(spikes + t * inner, spike_out);
          if constexpr (kVSeq) store_pack(v_seq + t * inner, v);
          if constexpr (kCheckpoints) {
            if ((t + 1) % kInterval == 0 && t + 1 < steps) {
              store_pack(checkpoints + ((t + 1) / kInterval - 1) * inner, v);
            }
          }
        }
      });
  if (ptr.v_final) store_pack(static_cast<S*>(ptr.v_final) + n, v);
}

// ---------------------------------------------------------------------------------------------
// The bulk forward (Hopper and later): the staged forward with the copies done by the Tensor
// Memory Accelerator. A block's kBulkWarps compute warps walk kBulkNeurons adjacent neurons of
// one row (one per thread); one more warp, the copy warp, moves the data: its first thread
// copies each chunk of kChunk steps of x as a single box into a ring of kSlots chunks, and each
// chunk of spikes out as a box from a ring of kOutSlots chunks. Each ring slot has two mbarriers
// (full, free), so a compute warp waits only for data it needs and never for the other warps
// (benchmarks/NOTES.md 26-27). Boxes past the end of the row or the sequence are zero-filled on
// load and clipped on store, so no thread checks bounds per step. V is stored by the compute
// threads themselves (rarely all of it; checkpoints every few steps).

constexpr int kBulkWarps = 4;
constexpr int kBulkNeurons = 32 * kBulkWarps;
constexpr int kBulkThreads = kBulkNeurons + 32;  // and the copy warp
// The first kSlots boxes of x leave this far apart, so that every block's first chunk lands
// early instead of all blocks' whole rings arriving together (benchmarks/NOTES.md 27).
constexpr int64_t kBulkStaggerNs = 500;

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

__device__ __forceinline__ int64_t global_time_ns() {
  int64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
__device__ __forceinline__ void wait_phase(uint64_t* barrier, int64_t completions) {
  const uint32_t parity = static_cast<uint32_t>(completions & 1);
  while (!cuda::ptx::mbarrier_try_wait_parity(barrier, parity)) {
  }
}
#endif

template <typename X, typename S, bool kHardReset, bool kCheckpoints, bool kVSeq, typename Bk>
__global__ void __launch_bounds__(kBulkThreads)
    bulk_forward_kernel(const __grid_constant__ CUtensorMap x_map,
                        const __grid_constant__ CUtensorMap spikes_map, ForwardPointers ptr,
                        int64_t steps, int64_t inner, int64_t blocks_per_row, QifParams<S> p,
                        S v_init_value) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  namespace ptx = cuda::ptx;
  constexpr int kChunk = Bk::kChunk, kSlots = Bk::kSlots, kOutSlots = Bk::kOutSlots;
  constexpr int kChunkBytes = Bk::template kChunkBytes<X>;
  extern __shared__ __align__(128) unsigned char ring[];  // boxes need 128-byte alignment
  X* x_ring = reinterpret_cast<X*>(ring);
  X* spike_ring = reinterpret_cast<X*>(ring + kSlots * kChunkBytes);
  // Chunk c uses slot c % kSlots of x and c % kOutSlots of spikes; each barrier completes one
  // phase per chunk through its slot, so chunk c waits for phase c / kSlots (or / kOutSlots).
  uint64_t* x_full = reinterpret_cast<uint64_t*>(ring + (kSlots + kOutSlots) * kChunkBytes);
  uint64_t* x_free = x_full + kSlots;          // every compute warp has read the chunk
  uint64_t* spikes_full = x_free + kSlots;     // every compute warp has written the chunk
  uint64_t* spikes_free = spikes_full + kOutSlots;  // the box has been read out

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t o = blockIdx.x / blocks_per_row;
  const int64_t i0 = (blockIdx.x - o * blocks_per_row) * kBulkNeurons;
  const int64_t chunks = (steps + kChunk - 1) / kChunk;
  if (threadIdx.x == 0) {
#pragma unroll
    for (int s = 0; s < kSlots; ++s) {
      ptx::mbarrier_init(&x_full[s], 1);
      ptx::mbarrier_init(&x_free[s], kBulkWarps);
    }
#pragma unroll
    for (int s = 0; s < kOutSlots; ++s) {
      ptx::mbarrier_init(&spikes_full[s], kBulkWarps);
      ptx::mbarrier_init(&spikes_free[s], 1);
    }
    ptx::fence_mbarrier_init(ptx::sem_release, ptx::scope_cluster);
  }
  __syncthreads();

  if (warp == kBulkWarps) {  // the copy warp; one thread issues every copy
    if (lane != 0) return;
    // A box's tensor coordinates, innermost first (neuron, step, outer index), fit 32 bits
    // (bulk_forward_ok).
    const int32_t column = static_cast<int32_t>(i0), row = static_cast<int32_t>(o);
    auto fetch = [&](int64_t c) {
      const int slot = static_cast<int>(c % kSlots);
      ptx::mbarrier_arrive_expect_tx(ptx::sem_release, ptx::scope_cta, ptx::space_shared,
                                     &x_full[slot], kChunkBytes);
      const int32_t coords[3] = {column, static_cast<int32_t>(c * kChunk), row};
      ptx::cp_async_bulk_tensor(ptx::space_cluster, ptx::space_global,
                                x_ring + slot * kChunk * kBulkNeurons, &x_map, coords,
                                &x_full[slot]);
    };
    const int64_t start = global_time_ns();
    for (int64_t c = 0; c < kSlots && c < chunks; ++c) {
      while (global_time_ns() < start + c * kBulkStaggerNs) {
      }
      fetch(c);
    }
    for (int64_t c = 0; c < chunks; ++c) {
      if (c + kSlots < chunks) {  // into chunk c's slot once every warp has read it
        wait_phase(&x_free[c % kSlots], c / kSlots);
        fetch(c + kSlots);
      }
      const int out = static_cast<int>(c % kOutSlots);
      wait_phase(&spikes_full[out], c / kOutSlots);
      const int32_t coords[3] = {column, static_cast<int32_t>(c * kChunk), row};
      ptx::cp_async_bulk_tensor(ptx::space_global, ptx::space_shared, &spikes_map, coords,
                                spike_ring + out * kChunk * kBulkNeurons);
      ptx::cp_async_bulk_commit_group();
      ptx::cp_async_bulk_wait_group_read(ptx::n32_t<0>{});
      ptx::mbarrier_arrive(&spikes_free[out]);
    }
    ptx::cp_async_bulk_wait_group(ptx::n32_t<0>{});
    return;
  }

  const bool active = i0 + threadIdx.x < inner;  // the others compute on zeros, store nothing
  const int64_t n = o * inner + i0 + threadIdx.x;
  constexpr int kInterval = checkpoint_interval(sizeof(X));
  S* checkpoints = kCheckpoints ? static_cast<S*>(ptr.checkpoints) +
                                      group_offset(n, checkpoint_count(steps, kInterval), inner)
                                : nullptr;
  S* v_seq = kVSeq ? static_cast<S*>(ptr.v_seq) + group_offset(n, steps, inner) : nullptr;
  S v = ptr.v_init && active ? static_cast<const S*>(ptr.v_init)[n] : v_init_value;
  // qif_charge split in two, its slope carried from step to step. After a hard reset V is
  // v_reset or H, so the next slope is one of two values known as soon as H is: selecting it
  // takes the compare off the chain from one step's V to the next (NOTES.md 27). The same
  // operations as qif_charge, so the same bits.
  const S slope_after_reset = qif_charge_slope(p.v_reset, p);
  S slope = qif_charge_slope(v, p);
  const X one = from_state<X>(S(1)), zero = from_state<X>(S(0));
  for (int64_t c = 0; c < chunks; ++c) {
    const int slot = static_cast<int>(c % kSlots), out = static_cast<int>(c % kOutSlots);
    wait_phase(&x_full[slot], c / kSlots);
    // The whole chunk into registers first: the compiler may not move these loads above the
    // spike stores into the same shared memory, where each would add its latency to a step.
    const X* x_box = x_ring + slot * kChunk * kBulkNeurons;
    X chunk_x[kChunk];
#pragma unroll
    for (int u = 0; u < kChunk; ++u) chunk_x[u] = x_box[u * kBulkNeurons + threadIdx.x];
    __syncwarp();
    if (lane == 0) ptx::mbarrier_arrive(&x_free[slot]);
    if (c >= kOutSlots) wait_phase(&spikes_free[out], c / kOutSlots - 1);
    X* spike_box = spike_ring + out * kChunk * kBulkNeurons;
    const int64_t t0 = c * kChunk;
    auto body = [&](auto full) {
#pragma unroll
      for (int u = 0; u < kChunk; ++u) {
        const int64_t t = t0 + u;
        if (!decltype(full)::value && t >= steps) break;
        const S h = qif_fma(slope, v, qif_drive(S(to_state(chunk_x[u])), p));
        const bool spike = qif_fires(h, p);
        if constexpr (kHardReset) {
          const S slope_after_h = qif_charge_slope(h, p);
          slope = spike ? slope_after_reset : slope_after_h;
        }
        spike_box[u * kBulkNeurons + threadIdx.x] = spike ? one : zero;
        v = qif_reset<kHardReset>(h, spike, p);
        if constexpr (!kHardReset) slope = qif_charge_slope(v, p);
        if constexpr (kVSeq) {
          if (active) __stcs(v_seq + t * inner, v);
        }
        if constexpr (kCheckpoints) {
          if ((t + 1) % kInterval == 0 && t + 1 < steps && active) {
            __stcs(checkpoints + ((t + 1) / kInterval - 1) * inner, v);
          }
        }
      }
    };
    if (t0 + kChunk <= steps) body(std::true_type{});
    else body(std::false_type{});
    ptx::fence_proxy_async(ptx::space_shared);  // the spikes, visible to the copy engine
    __syncwarp();
    if (lane == 0) ptx::mbarrier_arrive(&spikes_full[out]);
  }
  if (ptr.v_final && active) static_cast<S*>(ptr.v_final)[n] = v;
#else
  __trap();  // launched only on devices of compute capability 9.0 and later (bulk_forward_ok)
#endif
}

// Blocks per multiprocessor the wide and narrow backward are compiled for (their register
// budget): 5 blocks of 128 threads (96 registers) hold an interval of each stream without
// spilling, against 4 when the compiler is left free; with grad_v_seq, a fourth stream, 4.
template <bool kHasGradVSeq>
constexpr int kBackwardBlocksPerSM = kHasGradVSeq ? 4 : 5;

// Walks the checkpoint intervals downwards, one thread per group through all T steps (the
// plans with enough neurons to fill the GPU, and layouts that cannot be staged). For each
// interval, H is recomputed upwards from the V entering it (its checkpoint, or v_init) and
// x, then BPTT walks it down. The loads run one interval ahead: x and the checkpoint of the
// interval below are issued as soon as this one's H is known, its cotangents as soon as this
// one's BPTT is done, so each load has a pass of compute (and the other warps) to arrive.
template <SurrogateKind kKind, bool kHardReset, bool kHasGradVSeq, typename X, typename S,
          typename Sh>
__global__ void __launch_bounds__(128, kBackwardBlocksPerSM<kHasGradVSeq>)
    backward_kernel(BackwardPointers ptr, int64_t steps, int64_t inner, int64_t groups,
                    QifParams<S> p, S v_init_value) {
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
  const int64_t offset = group_offset(n, steps, inner);
  const int64_t top = checkpoint_count(steps, kInterval);  // the last interval
  const X* x = static_cast<const X*>(ptr.x) + offset;
  const X* grad_spikes =
      ptr.grad_spikes ? static_cast<const X*>(ptr.grad_spikes) + offset : nullptr;
  const S* grad_v_seq = kHasGradVSeq ? static_cast<const S*>(ptr.grad_v_seq) + offset : nullptr;
  const S* checkpoints =
      top > 0 ? static_cast<const S*>(ptr.checkpoints) + group_offset(n, top, inner) : nullptr;
  X* grad_x = static_cast<X*>(ptr.grad_x) + offset;
  const State v_start = initial_state<S, kVec>(ptr.v_init, n, v_init_value);

  Input xs[kC], gs[kC];
  State gv[kHasGradVSeq ? kC : 1];
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
        if constexpr (kHasGradVSeq) gv[u] = load_pack<S, kVec>(grad_v_seq + first + u * inner);
      }
    }
  };

  State carry = ptr.grad_v_final
                    ? load_pack<S, kVec>(static_cast<const S*>(ptr.grad_v_final) + n)
                    : zero_pack<S, kVec>();
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
          h[u].v[j] = qif_charge(v.v[j], S(to_state(xs[u].v[j])), p);
          v.v[j] = qif_state_after<kHardReset>(h[u].v[j], p);
        }
      }
      if (k > 0) load_inputs(k - 1, std::true_type{});
#pragma unroll
      for (int u = kC - 1; u >= 0; --u) {
        if (!decltype(all)::value && t0 + u >= steps) continue;
        Input gx;
#pragma unroll
        for (int j = 0; j < kVec; ++j) {
          const S v_prev = u > 0 ? qif_state_after<kHardReset>(h[u - 1].v[j], p) : v_entry.v[j];
          S g_v = S(0);
          if constexpr (kHasGradVSeq) g_v = gv[u].v[j];
          const S grad_h = qif_backward_step<kKind, kHardReset>(
              h[u].v[j], v_prev, S(to_state(gs[u].v[j])), g_v, carry.v[j], p);
          gx.v[j] = from_state<X>(grad_h * p.inv_tau);
        }
        store_pack(grad_x + (t0 + u) * inner, gx);
      }
      if (k > 0) load_cotangents(k - 1, std::true_type{});
    };
    if (k == top && !top_full) interval(std::false_type{});
    else interval(std::true_type{});
  }
  if (ptr.grad_v_init) store_pack(static_cast<S*>(ptr.grad_v_init) + n, carry);
}

// The segmented plan: a segment is one checkpoint interval, so that each warp starts its
// recomputation of H from a checkpoint; shared-memory ring depth; most segments (warps) per
// block (16: a 16-bit layer of 2^14 neurons, two per thread, fills the GPU only with that many).
constexpr int kSegmentSlots = 3;
constexpr int kMaxSegments = 16;

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

// ---------------------------------------------------------------------------------------------
// Launch plans (host)

enum class Plan { kWide, kNarrow, kNarrowLong, kStagedDeep, kStagedShallow, kSegmented };

// An attribute of the device, read once per process (as the first device used reports it), or
// `fallback` if it cannot be read.
inline int read_device_attribute(cudaDeviceAttr attribute, int fallback) {
  int device = 0, value = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&value, attribute, device) != cudaSuccess) {
    cudaGetLastError();  // leave no sticky error for the launch check
    return fallback;
  }
  return value;
}

inline int multiprocessor_count() {
  static const int count = read_device_attribute(cudaDevAttrMultiProcessorCount, 132);
  return count;
}

// The most shared memory one block may opt in to (99 KB on some GPUs, 227 KB on the H100 and
// H200); 48 KB, what every device gives a block without opting in, if it cannot be read.
inline size_t max_shared_memory_per_block() {
  static const size_t bytes = static_cast<size_t>(
      read_device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin, 48 * 1024));
  return bytes;
}

inline size_t shared_memory_per_multiprocessor() {
  static const size_t bytes = static_cast<size_t>(
      read_device_attribute(cudaDevAttrMaxSharedMemoryPerMultiprocessor, 48 * 1024));
  return bytes;
}

inline int threads_per_multiprocessor() {
  static const int threads = read_device_attribute(cudaDevAttrMaxThreadsPerMultiProcessor, 1024);
  return threads;
}

inline int compute_capability_major() {
  static const int major = read_device_attribute(cudaDevAttrComputeCapabilityMajor, 0);
  return major;
}

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
  dim3 block() const { return dim3(threads_per_block / segments, segments); }
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
                              bool backward) {
  const int64_t sms = multiprocessor_count();
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

// Calls fn(Shape<kVec, kChunk, kStaged>{}) for a forward plan.
template <typename X, typename Fn>
void dispatch_forward_plan(Plan plan, Fn&& fn) {
  switch (plan) {
    case Plan::kWide: return fn(Shape<kWideVec<X>, 4, false>{});
    case Plan::kNarrow: return fn(Shape<1, 8, false>{});
    case Plan::kNarrowLong: return fn(Shape<1, 32, false>{});
    case Plan::kStagedDeep: return fn(Shape<kStagedVec<X>, 32, true>{});
    default: return fn(Shape<kStagedVec<X>, 8, true>{});  // staged shallow
  }
}

// The backward works one checkpoint interval at a time in every plan (short sequences in the
// wide plan: one chunk of kShortSteps).
template <typename X, typename Fn>
void dispatch_backward_plan(Plan plan, int64_t steps, Fn&& fn) {
  constexpr int kInterval = checkpoint_interval(sizeof(X));
  switch (plan) {
    case Plan::kWide:
      if (steps <= kShortSteps) return fn(Shape<kBackwardShortVec<X>, kShortSteps, false>{});
      return fn(Shape<kBackwardWideVec<X>, kInterval, false>{});
    case Plan::kSegmented: return fn(Shape<kStagedVec<X>, kInterval, true>{});
    default: return fn(Shape<1, kInterval, false>{});  // narrow, narrow long
  }
}

struct ForwardLaunch {
  ForwardPointers ptr;
  Layout layout;
  ffi::DataType input_dtype;
  double tau, v_c, a0, v_threshold, v_rest, v_reset;
  bool hard_reset;
  double v_init_value;
};

struct BackwardLaunch {
  BackwardPointers ptr;
  Layout layout;
  ffi::DataType input_dtype;
  double tau, v_c, a0, v_threshold, v_rest, v_reset, alpha;
  bool hard_reset, detach_reset;
  double v_init_value;
};

// The segmented plan with as many segments (warps per block) as the device's shared memory
// per block holds: every segment adds 32 threads' rings and composites.
inline LaunchPlan fit_segments(LaunchPlan plan, size_t shared_bytes_per_thread) {
  while (plan.segments > 1 &&
         shared_bytes_per_thread * 32 * plan.segments > max_shared_memory_per_block()) {
    --plan.segments;
    plan.threads_per_block = 32 * plan.segments;
  }
  return plan;
}

inline bool all_aligned(std::initializer_list<const void*> buffers) {
  bool aligned = true;
  for (const void* b : buffers) aligned &= reinterpret_cast<uintptr_t>(b) % 16 == 0;
  return aligned;
}

// Launches the kernel of one (plan, types) choice on `stream`; returns the launch status.
template <typename Kernel, typename Args, typename S>
cudaError_t launch(Kernel kernel, const LaunchPlan& plan, size_t shared_bytes_per_thread,
                   cudaStream_t stream, const Args& ptr, const Layout& l,
                   const QifParams<S>& params, double v_init_value) {
  const size_t shared = shared_bytes_per_thread * plan.threads_per_block;
  if (shared > 48 * 1024) {  // above the default limit a kernel must opt in (per device)
    const cudaError_t status =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, shared);
    if (status != cudaSuccess) return status;
  }
  kernel<<<plan.blocks(), plan.block(), shared, stream>>>(ptr, l.steps, l.inner, plan.groups,
                                                          params, static_cast<S>(v_init_value));
  return cudaGetLastError();
}

// The bulk forward's rings, per input type (measured, benchmarks/NOTES.md 26-27): 4 slots of x
// and 2 of spikes. Deep (about one block per multiprocessor): chunks of 128 bytes per neuron
// (64 steps of 16-bit inputs, 32 of float32; 96 KB). Shallow: chunks of 64 bytes per neuron,
// 48 KB per block, so that four blocks share a multiprocessor.
template <typename X>
using BulkDeep = BulkShape<128 / static_cast<int>(sizeof(X)), 4, 2>;
template <typename X>
using BulkShallow = BulkShape<64 / static_cast<int>(sizeof(X)), 4, 2>;

// The driver's tensor-map encoder, or nullptr if the driver has none.
inline PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 encoder = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
#if CUDART_VERSION >= 12050
    const cudaError_t status = cudaGetDriverEntryPointByVersion(
        "cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found);
#else
    const cudaError_t status =
        cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", &fn, cudaEnableDefault, &found);
#endif
    if (status != cudaSuccess || found != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      fn = nullptr;
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  return encoder;
}

template <typename X>
constexpr CUtensorMapDataType kTensorMapType =
    std::is_same_v<X, __half>          ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16
    : std::is_same_v<X, __nv_bfloat16> ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
    : std::is_same_v<X, float>         ? CU_TENSOR_MAP_DATA_TYPE_FLOAT32
                                       : CU_TENSOR_MAP_DATA_TYPE_FLOAT64;

// One [outer, T, inner] stream as a 3-D tensor (innermost first) in boxes of the block's
// neurons by `chunk` steps.
template <typename X>
cudaError_t encode_stream(CUtensorMap* map, const void* data, const Layout& l, int chunk) {
  const cuuint64_t dims[3] = {static_cast<cuuint64_t>(l.inner), static_cast<cuuint64_t>(l.steps),
                              static_cast<cuuint64_t>(l.outer)};
  const cuuint64_t strides[2] = {static_cast<cuuint64_t>(l.inner) * sizeof(X),
                                 static_cast<cuuint64_t>(l.inner * l.steps) * sizeof(X)};
  const cuuint32_t box[3] = {kBulkNeurons, static_cast<cuuint32_t>(chunk), 1};
  const cuuint32_t element_strides[3] = {1, 1, 1};
  const CUresult status = tensor_map_encoder()(
      map, kTensorMapType<X>, 3, const_cast<void*>(data), dims, strides, box, element_strides,
      CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_L2_PROMOTION_NONE,
      CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return status == CUDA_SUCCESS ? cudaSuccess : cudaErrorInvalidValue;
}

// Whether the bulk forward can take this call: a device with the copy engine, x and spikes
// 16-byte aligned with 16-byte rows (what tensor maps require), coordinates that fit 32 bits,
// and all `blocks` resident at once (every block lives for the whole sequence).
template <typename X>
bool bulk_forward_ok(const ForwardLaunch& a, size_t shared, int64_t blocks) {
  const Layout& l = a.layout;
  const int64_t per_multiprocessor =
      std::min<int64_t>(shared_memory_per_multiprocessor() / (shared + 1024),  // 1 KB reserved
                        threads_per_multiprocessor() / kBulkThreads);
  return compute_capability_major() >= 9 && tensor_map_encoder() != nullptr &&
         all_aligned({a.ptr.x, a.ptr.spikes}) && (l.inner * sizeof(X)) % 16 == 0 &&
         std::max({l.inner, l.steps, l.outer}) <= INT32_MAX &&
         l.inner * l.steps * static_cast<int64_t>(sizeof(X)) < (int64_t{1} << 40) &&
         blocks <= multiprocessor_count() * per_multiprocessor;
}

// Launches the bulk forward with ring Bk if it can take the call (bulk_forward_ok); returns
// false, launching nothing, if not.
template <typename X, typename S, typename Bk>
bool launch_bulk_forward(const ForwardLaunch& a, const QifParams<S>& p, cudaStream_t stream,
                         cudaError_t* status) {
  const Layout& l = a.layout;
  const size_t shared = Bk::template kSharedBytes<X>;
  const int64_t blocks_per_row = (l.inner + kBulkNeurons - 1) / kBulkNeurons;
  const int64_t blocks = l.outer * blocks_per_row;
  if (!bulk_forward_ok<X>(a, shared, blocks)) return false;
  CUtensorMap x_map, spikes_map;
  *status = encode_stream<X>(&x_map, a.ptr.x, l, Bk::kChunk);
  if (*status == cudaSuccess) {
    *status = encode_stream<X>(&spikes_map, a.ptr.spikes, l, Bk::kChunk);
  }
  if (*status != cudaSuccess) return true;  // taken, and failed: the handler reports it
  auto run = [&](auto kernel) {
    *status = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, shared);
    if (*status != cudaSuccess) return;
    kernel<<<static_cast<unsigned int>(blocks), kBulkThreads, shared, stream>>>(
        x_map, spikes_map, a.ptr, l.steps, l.inner, blocks_per_row, p,
        static_cast<S>(a.v_init_value));
    *status = cudaGetLastError();
  };
  auto with_stores = [&]<bool kHardReset>() {
    const bool checkpoints = a.ptr.checkpoints != nullptr, v_seq = a.ptr.v_seq != nullptr;
    if (checkpoints && v_seq) run(bulk_forward_kernel<X, S, kHardReset, true, true, Bk>);
    else if (checkpoints) run(bulk_forward_kernel<X, S, kHardReset, true, false, Bk>);
    else if (v_seq) run(bulk_forward_kernel<X, S, kHardReset, false, true, Bk>);
    else run(bulk_forward_kernel<X, S, kHardReset, false, false, Bk>);  // inference
  };
  if (a.hard_reset) with_stores.template operator()<true>();
  else with_stores.template operator()<false>();
  return true;
}

inline cudaError_t launch_forward(const ForwardLaunch& a, cudaStream_t stream) {
  cudaError_t status = cudaSuccess;
  dispatch_dtype<__half, __nv_bfloat16>(a.input_dtype, [&](auto x_tag, auto s_tag) {
    using X = decltype(x_tag);
    using S = decltype(s_tag);
    const auto p = QifParams<S>::from_double(a.tau, a.v_c, a.a0, a.v_threshold, a.v_rest,
                                             a.v_reset, a.hard_reset);
    const LaunchPlan plan =
        choose_plan(a.layout, kWideVec<X>, kStagedVec<X>,
                    all_aligned({a.ptr.x, a.ptr.v_init, a.ptr.spikes, a.ptr.v_final, a.ptr.v_seq,
                                 a.ptr.checkpoints}),
                    false);
    // The staged plans' layouts go to the bulk forward where it can take them.
    if ((plan.plan == Plan::kStagedDeep &&
         launch_bulk_forward<X, S, BulkDeep<X>>(a, p, stream, &status)) ||
        (plan.plan == Plan::kStagedShallow &&
         launch_bulk_forward<X, S, BulkShallow<X>>(a, p, stream, &status))) {
      return;
    }
    dispatch_forward_plan<X>(plan.plan, [&]<typename Sh>(Sh) {
      using Reader = StreamReader<Sh::kStaged, 1, Sh::kChunk, X, Sh::kVec>;
      const size_t shared = Sh::kStaged ? Reader::kStagedBytes : 0;
      auto run = [&]<bool kCheckpoints, bool kVSeq>() {
        status = a.hard_reset
                     ? launch(forward_kernel<X, S, true, kCheckpoints, kVSeq, Sh>, plan, shared,
                              stream, a.ptr, a.layout, p, a.v_init_value)
                     : launch(forward_kernel<X, S, false, kCheckpoints, kVSeq, Sh>, plan, shared,
                              stream, a.ptr, a.layout, p, a.v_init_value);
      };
      const bool checkpoints = a.ptr.checkpoints != nullptr, v_seq = a.ptr.v_seq != nullptr;
      if (checkpoints && v_seq) run.template operator()<true, true>();
      else if (checkpoints) run.template operator()<true, false>();
      else if (v_seq) run.template operator()<false, true>();
      else run.template operator()<false, false>();  // inference
    });
  });
  return status;
}

// Instantiated one surrogate per translation unit (qif_cuda_backward.cu): see
// JAXQIF_BACKWARD_INSTANCES.
template <SurrogateKind kKind, bool kHardReset>
cudaError_t launch_backward(const BackwardLaunch& a, cudaStream_t stream) {
  cudaError_t status = cudaSuccess;
  dispatch_dtype<__half, __nv_bfloat16>(a.input_dtype, [&](auto x_tag, auto s_tag) {
    using X = decltype(x_tag);
    using S = decltype(s_tag);
    const auto p = QifParams<S>::from_double(a.tau, a.v_c, a.a0, a.v_threshold, a.v_rest,
                                             a.v_reset, a.hard_reset, kKind, a.alpha,
                                             a.detach_reset);
    const LaunchPlan plan = choose_plan(
        a.layout, backward_wide_vec<X>(a.layout.steps), kStagedVec<X>,
        all_aligned({a.ptr.grad_spikes, a.ptr.grad_v_seq, a.ptr.grad_v_final, a.ptr.x,
                     a.ptr.checkpoints, a.ptr.v_init, a.ptr.grad_x, a.ptr.grad_v_init}),
        true);
    const bool has_grad_v_seq = a.ptr.grad_v_seq != nullptr;
    dispatch_backward_plan<X>(plan.plan, a.layout.steps, [&]<typename Sh>(Sh) {
      auto run = [&](auto kernel, const LaunchPlan& launch_plan, size_t shared) {
        status = launch(kernel, launch_plan, shared, stream, a.ptr, a.layout, p, a.v_init_value);
      };
      if constexpr (Sh::kStaged) {
        const size_t shared = segmented_shared_bytes<X, S, Sh>(has_grad_v_seq);
        const LaunchPlan fitted = fit_segments(plan, shared);
        if (has_grad_v_seq) {
          run(segmented_backward_kernel<kKind, kHardReset, true, X, S, Sh>, fitted, shared);
        } else {
          run(segmented_backward_kernel<kKind, kHardReset, false, X, S, Sh>, fitted, shared);
        }
      } else {
        if (has_grad_v_seq) run(backward_kernel<kKind, kHardReset, true, X, S, Sh>, plan, 0);
        else run(backward_kernel<kKind, kHardReset, false, X, S, Sh>, plan, 0);
      }
    });
  });
  return status;
}

// PREFIX = extern declares the instances of one surrogate, PREFIX empty defines them.
#define JAXQIF_BACKWARD_INSTANCES(PREFIX, KIND)                                          \
  PREFIX template cudaError_t launch_backward<SurrogateKind::KIND, true>(                 \
      const BackwardLaunch&, cudaStream_t);                                               \
  PREFIX template cudaError_t launch_backward<SurrogateKind::KIND, false>(                \
      const BackwardLaunch&, cudaStream_t);

// Every includer uses the instances compiled in qif_cuda_backward.cu (which defines one
// surrogate's after this declaration), instead of compiling its own.
JAXQIF_BACKWARD_INSTANCES(extern, kSigmoid)
JAXQIF_BACKWARD_INSTANCES(extern, kATan)
JAXQIF_BACKWARD_INSTANCES(extern, kPiecewiseQuadratic)
JAXQIF_BACKWARD_INSTANCES(extern, kPiecewiseExp)
JAXQIF_BACKWARD_INSTANCES(extern, kSoftSign)
JAXQIF_BACKWARD_INSTANCES(extern, kSuperSpike)
JAXQIF_BACKWARD_INSTANCES(extern, kErf)

}  // namespace jaxqif::gpu
