// The forward's launch, for any launcher (launch/launch.h): the plan (launch/plan.h), the bulk
// forward's tensor maps and residency check, and the kernel instance of the call. Plain C++; the
// nvcc-built library instantiates it in launch/cuda_forward.cu, the only translation unit with
// forward kernels, the run-time compiled path in qif_cuda_rtc.cc.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "launch/kernel_instances.h"
#include "launch/launch.h"
#include "launch/plan.h"
#include "qif_buffers.h"
#include "qif_ffi.h"
#include "qif_math.h"
#include "static_switch.h"

namespace jaxqif::gpu {

namespace forward_detail {

// Whether the call stores checkpoints or v_seq: a training forward's, not inference's.
inline bool stores_a_stream(const ForwardCall& call) {
  return call.ptr.checkpoints != nullptr || call.ptr.v_seq != nullptr;
}

// One [outer, T, inner] stream of dtype D as a 3-D tensor (innermost first) in boxes of the
// block's neurons by `chunk` steps.
template <typename D, typename Launcher>
ffi::Error encode_stream(Launcher& launcher, TensorMap* map, const void* data, const Layout& l,
                         int chunk) {
  using X = typename D::Input;
  const uint64_t dims[3] = {static_cast<uint64_t>(l.inner), static_cast<uint64_t>(l.steps),
                            static_cast<uint64_t>(l.outer)};
  const uint64_t strides[2] = {static_cast<uint64_t>(l.inner) * sizeof(X),
                               static_cast<uint64_t>(l.inner * l.steps) * sizeof(X)};
  const uint32_t box[3] = {kBulkNeurons, static_cast<uint32_t>(chunk), 1};
  return launcher.encode_tensor_map(map, D::kDType, data, dims, strides, box);
}

// Whether the bulk forward can take this call: a device with the copy engine, x and spikes
// 16-byte aligned with 16-byte rows (what tensor maps require), coordinates that fit 32 bits,
// and all `blocks` resident at once (every block lives for the whole sequence).
template <typename X, typename Launcher>
bool bulk_forward_ok(Launcher& launcher, const ForwardCall& call, size_t shared,
                     int64_t blocks) {
  const Layout& l = call.layout;
  const DeviceProperties& device = launcher.device();
  return device.compute_capability_major >= 9 && launcher.has_tensor_maps() &&
         all_aligned({call.ptr.x, call.ptr.spikes}) && (l.inner * sizeof(X)) % 16 == 0 &&
         std::max({l.inner, l.steps, l.outer}) <= INT32_MAX &&
         l.inner * l.steps * static_cast<int64_t>(sizeof(X)) < (int64_t{1} << 40) &&
         blocks <= bulk_resident_blocks(shared, device);
}

// Launches the bulk forward with ring Bk if it can take the call (bulk_forward_ok) and returns
// true, leaving the launch's status in *status; returns false, launching nothing, if not.
template <typename D, typename Bk, typename Launcher>
bool launch_bulk_forward(Launcher& launcher, const ForwardCall& call,
                         const QifParams<typename D::State>& p, ffi::Error* status) {
  using X = typename D::Input;
  using S = typename D::State;
  const Layout& l = call.layout;
  const size_t shared = Bk::template kSharedBytes<X>;
  const int64_t blocks_per_row = (l.inner + kBulkNeurons - 1) / kBulkNeurons;
  const int64_t blocks = l.outer * blocks_per_row;
  if (!bulk_forward_ok<X>(launcher, call, shared, blocks)) return false;
  TensorMap x_map, spikes_map;
  *status = encode_stream<D>(launcher, &x_map, call.ptr.x, l, Bk::kChunk);
  if (status->success()) {
    *status = encode_stream<D>(launcher, &spikes_map, call.ptr.spikes, l, Bk::kChunk);
  }
  if (!status->success()) return true;  // taken, and failed: the handler reports it
  const Grid grid{static_cast<unsigned int>(blocks), kBulkThreads};
  const S v_init_value = static_cast<S>(call.settings.v_init_value);
  if (call.params.any()) {  // per-neuron constants; inference apart, as in launch_forward
    bool_switch([&]<bool kHardReset, bool kStores>() {
      *status = launcher.launch(PerNeuronBulkForwardKernel<D, kHardReset, kStores, Bk>{}, grid,
                                shared, x_map, spikes_map, ForwardArrays{call.ptr, call.params},
                                l.steps, l.inner, blocks_per_row, p, v_init_value,
                                NeuronValues<S>::numbers(call.settings));
    }, call.settings.hard_reset, stores_a_stream(call));
    return true;
  }
  // One kernel per set of stored streams (inference: neither checkpoints nor v_seq).
  bool_switch([&]<bool kHardReset, bool kCheckpoints, bool kVSeq>() {
    *status = launcher.launch(BulkForwardKernel<D, kHardReset, kCheckpoints, kVSeq, Bk>{}, grid,
                              shared, x_map, spikes_map, call.ptr, l.steps, l.inner,
                              blocks_per_row, p, v_init_value);
  }, call.settings.hard_reset, call.ptr.checkpoints != nullptr, call.ptr.v_seq != nullptr);
  return true;
}

}  // namespace forward_detail

// Launches the forward of one checked call.
template <typename Launcher>
ffi::Error launch_forward(const ForwardCall& call, Launcher& launcher) {
  using namespace forward_detail;
  ffi::Error status = no_kernel_for_call();
  dispatch_dtype<Launcher::template DType>(call.input_dtype, [&]<typename D>() {
    using X = typename D::Input;
    using S = typename D::State;
    const QifParams<S> p(call.settings);
    const LaunchPlan scalar_plan =
        choose_plan(call.layout, kWideVec<X>, kStagedVec<X>,
                    all_aligned({call.ptr.x, call.ptr.v_init, call.ptr.spikes, call.ptr.v_final,
                                 call.ptr.v_seq, call.ptr.checkpoints}),
                    false, launcher.device());
    const LaunchPlan plan = call.params.any() ? per_neuron_plan(scalar_plan) : scalar_plan;
    // The staged plans' layouts go to the bulk forward where it can take them.
    if ((plan.plan == Plan::kStagedDeep &&
         launch_bulk_forward<D, BulkDeep<X>>(launcher, call, p, &status)) ||
        (plan.plan == Plan::kStagedShallow &&
         launch_bulk_forward<D, BulkShallow<X>>(launcher, call, p, &status))) {
      return;
    }
    dispatch_forward_plan<X>(plan.plan, [&]<typename Sh>() {
      const size_t shared = kForwardStagedBytes<X, Sh>;
      if (call.params.any()) {
        // Per-neuron constants. Inference (no stream stored) has its own instance, with no
        // registers held for the streams it never writes; a training forward's streams are
        // chosen at run time (kStores: one instance for all three sets).
        if constexpr (kPerNeuronShape<Sh>) {
          bool_switch([&]<bool kHardReset, bool kStores>() {
            status = launch_plan(launcher, PerNeuronForwardKernel<D, kHardReset, kStores, Sh>{},
                                 plan, shared, ForwardArrays{call.ptr, call.params},
                                 call.layout, p, call.settings.v_init_value,
                                 NeuronValues<S>::numbers(call.settings));
          }, call.settings.hard_reset, stores_a_stream(call));
        }
        return;
      }
      // One kernel per set of stored streams (inference: neither checkpoints nor v_seq).
      bool_switch([&]<bool kHardReset, bool kCheckpoints, bool kVSeq>() {
        status = launch_plan(launcher, ForwardKernel<D, kHardReset, kCheckpoints, kVSeq, Sh>{},
                             plan, shared, call.ptr, call.layout, p,
                             call.settings.v_init_value);
      }, call.settings.hard_reset, call.ptr.checkpoints != nullptr, call.ptr.v_seq != nullptr);
    });
  });
  return status;
}

}  // namespace jaxqif::gpu
