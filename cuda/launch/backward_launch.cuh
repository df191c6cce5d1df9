// The backward's launch template: the plan (launch/plan.h) and the backward kernels of one
// surrogate. Included only by the per-surrogate translation units that CMakeLists.txt generates
// (backward_<Surrogate>.cu: one JAXQIF_BACKWARD_INSTANCES each), built with --fmad=true; never
// with the forward's launch or kernels.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "kernels/backward_kernel.cuh"
#include "kernels/segmented_backward_kernel.cuh"
#include "launch/backward_launch.h"
#include "launch/cuda_dtypes.h"
#include "launch/launch.cuh"
#include "launch/plan.h"
#include "qif_buffers.h"
#include "qif_ffi.h"
#include "qif_math.h"
#include "static_switch.h"

namespace jaxqif::gpu {

template <SurrogateKind kKind, bool kHardReset>
cudaError_t launch_backward(const BackwardCall& call, cudaStream_t stream) {
  // Left so only if no kernel serves the call: a dtype or a plan outside the lists, which the
  // handler's checks and choose_plan rule out.
  cudaError_t status = cudaErrorNotSupported;
  dispatch_dtype<CudaDType>(call.input_dtype, [&]<typename D>() {
    using X = typename D::Input;
    using S = typename D::State;
    const auto p = QifParams<S>::template backward<kKind>(call.settings);
    const LaunchPlan plan = choose_plan(
        call.layout, backward_wide_vec<X>(call.layout.steps), kStagedVec<X>,
        all_aligned({call.ptr.grad_spikes, call.ptr.grad_v_seq, call.ptr.grad_v_final,
                     call.ptr.x, call.ptr.checkpoints, call.ptr.v_init, call.ptr.grad_x,
                     call.ptr.grad_v_init}),
        true, device_properties());
    dispatch_backward_plan<X>(plan.plan, call.layout.steps, [&]<typename Sh>() {
      if (call.params.any()) {  // per-neuron constants and gradients; grad_v_seq at run time
        const BackwardArrays arrays{call.ptr, call.params, call.param_grads};
        const auto numbers = NeuronValues<S>::numbers(call.settings.neuron);
        const double v_init_value = call.settings.neuron.v_init_value;
        if constexpr (Sh::kStaged) {
          const size_t shared = segmented_shared_bytes<X, S, Sh>(call.ptr.grad_v_seq != nullptr);
          LaunchPlan segmented = plan;  // at most the warps per block the kernel is built for
          segmented.segments = std::min(plan.segments, kPerNeuronMaxSegments<S>);
          segmented.threads_per_block = 32 * segmented.segments;
          status = launch(per_neuron_segmented_backward_kernel<kKind, kHardReset, X, S, Sh>,
                          fit_segments(segmented, shared, device_properties()), shared, stream,
                          arrays, call.layout, p, v_init_value, numbers);
        } else {
          status = launch(per_neuron_backward_kernel<kKind, kHardReset, X, S, Sh>, plan, 0,
                          stream, arrays, call.layout, p, v_init_value, numbers);
        }
        return;
      }
      auto run = [&](auto kernel, const LaunchPlan& launch_plan, size_t shared) {
        status = launch(kernel, launch_plan, shared, stream, call.ptr, call.layout, p,
                        call.settings.neuron.v_init_value);
      };
      bool_switch([&]<bool kHasGradVSeq>() {
        if constexpr (Sh::kStaged) {
          const size_t shared = segmented_shared_bytes<X, S, Sh>(kHasGradVSeq);
          run(segmented_backward_kernel<kKind, kHardReset, kHasGradVSeq, X, S, Sh>,
              fit_segments(plan, shared, device_properties()), shared);
        } else {
          run(backward_kernel<kKind, kHardReset, kHasGradVSeq, X, S, Sh>, plan, 0);
        }
      }, call.ptr.grad_v_seq != nullptr);
    });
  });
  return status;
}

}  // namespace jaxqif::gpu
