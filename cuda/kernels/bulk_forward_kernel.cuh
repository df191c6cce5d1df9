// The bulk forward (Hopper and later): the staged forward with the copies done by the Tensor
// Memory Accelerator. A block's kBulkWarps compute warps walk kBulkNeurons adjacent neurons of
// one row (one per thread); one more warp, the copy warp, moves the data: its first thread
// copies each chunk of kChunk steps of x as a single box into a ring of kSlots chunks, and each
// chunk of spikes out as a box from a ring of kOutSlots chunks. Each ring slot has two mbarriers
// (full, free), so a compute warp waits only for data it needs and never for the other warps
// (benchmarks/NOTES.md, "The bulk forward: the Tensor Memory Accelerator copies the staged plans'
// chunks" and "The bulk forward: a copy warp, staggered first boxes, the slope carried"). Boxes
// past the end of the row or the sequence are zero-filled on load and clipped on store, so no
// thread checks bounds per step. V is stored by the compute
// threads themselves (rarely all of it; checkpoints every few steps).
//
// Device code only, with no host-only include: a kernel header (see cuda/README.md). The
// launch (tensor maps, the residency check) is launch/forward_launch.cu's.
#pragma once

#if defined(__CUDACC_RTC__)
// NVRTC compiles no host header such as <cuda.h>: its tensor map type, as cuda.h lays it out
// (the launch fills it; the kernel only passes its address to the copy engine).
typedef struct alignas(64) CUtensorMap_st {
  unsigned long long opaque[16];
} CUtensorMap;
#else
#include <cuda.h>  // CUtensorMap
#endif
#include <cuda/ptx>

#include "std_headers.h"

#include "kernels/neuron_params.cuh"
#include "kernels/shapes.h"
#include "kernels/stream_io.cuh"
#include "qif_buffers.h"
#include "qif_math.h"

namespace jaxqif::gpu {

// The first kSlots boxes of x leave this far apart, so that every block's first chunk lands
// early instead of all blocks' whole rings arriving together (benchmarks/NOTES.md, "The bulk
// forward: a copy warp, staggered first boxes, the slope carried").
constexpr int64_t kBulkStaggerNs = 500;

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

// The walk of one block, its neurons' constants from make_params(n) (SharedParams or
// NeuronParams<S, 1>, kernels/neuron_params.cuh): folded by the compute threads only, after the
// copy warp has left. store_checkpoints, store_v_seq: flags (compile-time in the scalar kernel,
// run-time in the per-neuron one).
template <typename X, typename S, bool kHardReset, typename Bk, typename MakeParams,
          typename Checkpoints, typename VSeq>
__device__ __forceinline__ void bulk_forward_walk(const CUtensorMap& x_map,
                                                  const CUtensorMap& spikes_map,
                                                  const ForwardPointers& ptr, int64_t steps,
                                                  int64_t inner, int64_t blocks_per_row,
                                                  const MakeParams& make_params, S v_init_value,
                                                  Checkpoints store_checkpoints,
                                                  VSeq store_v_seq) {
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
  const auto params = make_params(n);
  const QifParams<S>& p = params[0];
  constexpr int kInterval = checkpoint_interval(sizeof(X));
  S* checkpoints = store_checkpoints
                       ? static_cast<S*>(ptr.checkpoints) +
                             group_offset(n, checkpoint_count(steps, kInterval), inner)
                       : nullptr;
  S* v_seq = store_v_seq ? static_cast<S*>(ptr.v_seq) + group_offset(n, steps, inner) : nullptr;
  S v = ptr.v_init && active ? static_cast<const S*>(ptr.v_init)[n] : v_init_value;
  // qif_charge split in two, its slope carried from step to step. After a hard reset V is
  // v_reset or H, so the next slope is one of two values known as soon as H is: selecting it
  // takes the compare off the chain from one step's V to the next (benchmarks/NOTES.md, "The
  // bulk forward: a copy warp, staggered first boxes, the slope carried"). The same operations
  // as qif_charge, so the same bits.
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
        if (store_v_seq) {
          if (active) __stcs(v_seq + t * inner, v);
        }
        if (store_checkpoints) {
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

// Every neuron with the call's constants; one instance per set of stored streams.
template <typename X, typename S, bool kHardReset, bool kCheckpoints, bool kVSeq, typename Bk>
__global__ void __launch_bounds__(kBulkThreads)
    bulk_forward_kernel(const __grid_constant__ CUtensorMap x_map,
                        const __grid_constant__ CUtensorMap spikes_map, ForwardPointers ptr,
                        int64_t steps, int64_t inner, int64_t blocks_per_row, QifParams<S> p,
                        S v_init_value) {
  bulk_forward_walk<X, S, kHardReset, Bk>(x_map, spikes_map, ptr, steps, inner, blocks_per_row,
                                          SharedParamsOf<S>{p}, v_init_value,
                                          Fixed<kCheckpoints>{}, Fixed<kVSeq>{});
}

// Some parameter given as an array: each thread's neuron its own constants, its carried slope
// and slope after the reset its own (registers). kStores = false: inference, nothing stored;
// true: the stored streams chosen at run time.
template <typename X, typename S, bool kHardReset, bool kStores, typename Bk>
__global__ void __launch_bounds__(kBulkThreads)
    per_neuron_bulk_forward_kernel(const __grid_constant__ CUtensorMap x_map,
                                   const __grid_constant__ CUtensorMap spikes_map,
                                   ForwardArrays ptr, int64_t steps, int64_t inner,
                                   int64_t blocks_per_row, QifParams<S> shared, S v_init_value,
                                   NeuronValues<S> numbers) {
  const NeuronParamsOf<S, 1> make_params{ptr.params, numbers, shared};
  if constexpr (kStores) {
    bulk_forward_walk<X, S, kHardReset, Bk>(x_map, spikes_map, ptr, steps, inner, blocks_per_row,
                                            make_params, v_init_value, ptr.checkpoints != nullptr,
                                            ptr.v_seq != nullptr);
  } else {
    bulk_forward_walk<X, S, kHardReset, Bk>(x_map, spikes_map, ptr, steps, inner, blocks_per_row,
                                            make_params, v_init_value, Fixed<false>{},
                                            Fixed<false>{});
  }
}

}  // namespace jaxqif::gpu
