// The forward's launch: the plan (launch/plan.h), the tensor maps of the bulk forward (the
// driver's encoder is reached only here) and every forward kernel's instance. The only
// translation unit that compiles forward kernels, built with --fmad=false (CMakeLists.txt): no
// contraction but qif_math.h's explicit fused multiply-adds, so that the forward agrees bit for
// bit with the CPU handler's.
#include "launch/forward_launch.h"

#include <cuda.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>  // the driver's tensor-map encoder

#include <algorithm>
#include <cstdint>

#include "kernels/bulk_forward_kernel.cuh"
#include "kernels/forward_kernel.cuh"
#include "kernels/stream_io.cuh"
#include "launch/cuda_dtypes.h"
#include "launch/launch.cuh"
#include "launch/plan.h"
#include "qif_buffers.h"
#include "qif_ffi.h"
#include "qif_math.h"
#include "static_switch.h"

namespace jaxqif::gpu {
namespace {

// The driver's tensor-map encoder, or nullptr if the driver has none.
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
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

// One [outer, T, inner] stream of dtype D as a 3-D tensor (innermost first) in boxes of the
// block's neurons by `chunk` steps.
template <typename D>
cudaError_t encode_stream(CUtensorMap* map, const void* data, const Layout& l, int chunk) {
  const cuuint64_t dims[3] = {static_cast<cuuint64_t>(l.inner), static_cast<cuuint64_t>(l.steps),
                              static_cast<cuuint64_t>(l.outer)};
  using X = typename D::Input;
  const cuuint64_t strides[2] = {static_cast<cuuint64_t>(l.inner) * sizeof(X),
                                 static_cast<cuuint64_t>(l.inner * l.steps) * sizeof(X)};
  const cuuint32_t box[3] = {kBulkNeurons, static_cast<cuuint32_t>(chunk), 1};
  const cuuint32_t element_strides[3] = {1, 1, 1};
  const CUresult status = tensor_map_encoder()(
      map, D::kTensorMap, 3, const_cast<void*>(data), dims, strides, box, element_strides,
      CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_L2_PROMOTION_NONE,
      CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return status == CUDA_SUCCESS ? cudaSuccess : cudaErrorInvalidValue;
}

// Whether the bulk forward can take this call: a device with the copy engine, x and spikes
// 16-byte aligned with 16-byte rows (what tensor maps require), coordinates that fit 32 bits,
// and all `blocks` resident at once (every block lives for the whole sequence).
// Whether the call stores checkpoints or v_seq: a training forward's, not inference's.
bool stores_a_stream(const ForwardCall& call) {
  return call.ptr.checkpoints != nullptr || call.ptr.v_seq != nullptr;
}

template <typename X>
bool bulk_forward_ok(const ForwardCall& call, size_t shared, int64_t blocks) {
  const Layout& l = call.layout;
  const DeviceProperties& device = device_properties();
  return device.compute_capability_major >= 9 && tensor_map_encoder() != nullptr &&
         all_aligned({call.ptr.x, call.ptr.spikes}) && (l.inner * sizeof(X)) % 16 == 0 &&
         std::max({l.inner, l.steps, l.outer}) <= INT32_MAX &&
         l.inner * l.steps * static_cast<int64_t>(sizeof(X)) < (int64_t{1} << 40) &&
         blocks <= bulk_resident_blocks(shared, device);
}

// Launches the bulk forward with ring Bk if it can take the call (bulk_forward_ok); returns
// false, launching nothing, if not.
template <typename D, typename Bk>
bool launch_bulk_forward(const ForwardCall& call, const QifParams<typename D::State>& p,
                         cudaStream_t stream, cudaError_t* status) {
  using X = typename D::Input;
  using S = typename D::State;
  const Layout& l = call.layout;
  const size_t shared = Bk::template kSharedBytes<X>;
  const int64_t blocks_per_row = (l.inner + kBulkNeurons - 1) / kBulkNeurons;
  const int64_t blocks = l.outer * blocks_per_row;
  if (!bulk_forward_ok<X>(call, shared, blocks)) return false;
  CUtensorMap x_map, spikes_map;
  *status = encode_stream<D>(&x_map, call.ptr.x, l, Bk::kChunk);
  if (*status == cudaSuccess) {
    *status = encode_stream<D>(&spikes_map, call.ptr.spikes, l, Bk::kChunk);
  }
  if (*status != cudaSuccess) return true;  // taken, and failed: the handler reports it
  auto run = [&](auto kernel, const auto& pointers, const auto&... numbers) {
    *status = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, shared);
    if (*status != cudaSuccess) return;
    kernel<<<static_cast<unsigned int>(blocks), kBulkThreads, shared, stream>>>(
        x_map, spikes_map, pointers, l.steps, l.inner, blocks_per_row, p,
        static_cast<S>(call.settings.v_init_value), numbers...);
    *status = cudaGetLastError();
  };
  if (call.params.any()) {  // per-neuron constants; inference apart, as in launch_forward
    bool_switch([&]<bool kHardReset, bool kStores>() {
      run(per_neuron_bulk_forward_kernel<X, S, kHardReset, kStores, Bk>,
          ForwardArrays{call.ptr, call.params}, NeuronValues<S>::numbers(call.settings));
    }, call.settings.hard_reset, stores_a_stream(call));
    return true;
  }
  // One kernel per set of stored streams (inference: neither checkpoints nor v_seq).
  bool_switch([&]<bool kHardReset, bool kCheckpoints, bool kVSeq>() {
    run(bulk_forward_kernel<X, S, kHardReset, kCheckpoints, kVSeq, Bk>, call.ptr);
  }, call.settings.hard_reset, call.ptr.checkpoints != nullptr, call.ptr.v_seq != nullptr);
  return true;
}

}  // namespace

cudaError_t launch_forward(const ForwardCall& call, cudaStream_t stream) {
  // Left so only if no kernel serves the call: a dtype or a plan outside the lists, which the
  // handler's checks and choose_plan rule out.
  cudaError_t status = cudaErrorNotSupported;
  dispatch_dtype<CudaDType>(call.input_dtype, [&]<typename D>() {
    using X = typename D::Input;
    using S = typename D::State;
    const QifParams<S> p(call.settings);
    const LaunchPlan plan =
        choose_plan(call.layout, kWideVec<X>, kStagedVec<X>,
                    all_aligned({call.ptr.x, call.ptr.v_init, call.ptr.spikes, call.ptr.v_final,
                                 call.ptr.v_seq, call.ptr.checkpoints}),
                    false, device_properties());
    // The staged plans' layouts go to the bulk forward where it can take them.
    if ((plan.plan == Plan::kStagedDeep &&
         launch_bulk_forward<D, BulkDeep<X>>(call, p, stream, &status)) ||
        (plan.plan == Plan::kStagedShallow &&
         launch_bulk_forward<D, BulkShallow<X>>(call, p, stream, &status))) {
      return;
    }
    dispatch_forward_plan<X>(plan.plan, [&]<typename Sh>() {
      using Reader = StreamReader<Sh::kStaged, 1, Sh::kChunk, X, Sh::kVec>;
      const size_t shared = Sh::kStaged ? Reader::kStagedBytes : 0;
      if (call.params.any()) {
        // Per-neuron constants. Inference (no stream stored) has its own instance, with no
        // registers held for the streams it never writes; a training forward's streams are
        // chosen at run time (kStores: one instance for all three sets).
        bool_switch([&]<bool kHardReset, bool kStores>() {
          status = launch(
              forward_kernel<X, S, kHardReset, kStores, kStores, Sh, ForwardArrays,
                             NeuronValues<S>>,
              plan, shared, stream, ForwardArrays{call.ptr, call.params}, call.layout, p,
              call.settings.v_init_value, NeuronValues<S>::numbers(call.settings));
        }, call.settings.hard_reset, stores_a_stream(call));
        return;
      }
      // One kernel per set of stored streams (inference: neither checkpoints nor v_seq).
      bool_switch([&]<bool kHardReset, bool kCheckpoints, bool kVSeq>() {
        status = launch(forward_kernel<X, S, kHardReset, kCheckpoints, kVSeq, Sh>, plan, shared,
                        stream, call.ptr, call.layout, p, call.settings.v_init_value);
      }, call.settings.hard_reset, call.ptr.checkpoints != nullptr, call.ptr.v_seq != nullptr);
    });
  });
  return status;
}

}  // namespace jaxqif::gpu
