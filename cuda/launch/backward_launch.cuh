// The backward's launch template: the plan (launch/plan.h) and the backward kernels of one
// surrogate. Included only by the per-surrogate translation units that CMakeLists.txt generates
// (backward_<Surrogate>.cu: one JAXQIF_BACKWARD_INSTANCES each), built with --fmad=true; never
// with the forward's launch or kernels.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels/backward_kernel.cuh"
#include "kernels/segmented_backward_kernel.cuh"
#include "launch/backward_launch.h"
#include "launch/launch.cuh"
#include "launch/plan.h"
#include "qif_buffers.h"
#include "qif_ffi.h"
#include "qif_math.h"
#include "static_switch.h"

namespace jaxqif::gpu {

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
        true, device_properties());
    dispatch_backward_plan<X>(plan.plan, a.layout.steps, [&]<typename Sh>(Sh) {
      auto run = [&](auto kernel, const LaunchPlan& launch_plan, size_t shared) {
        status = launch(kernel, launch_plan, shared, stream, a.ptr, a.layout, p, a.v_init_value);
      };
      bool_switch([&]<bool kHasGradVSeq>() {
        if constexpr (Sh::kStaged) {
          const size_t shared = segmented_shared_bytes<X, S, Sh>(kHasGradVSeq);
          run(segmented_backward_kernel<kKind, kHardReset, kHasGradVSeq, X, S, Sh>,
              fit_segments(plan, shared, device_properties()), shared);
        } else {
          run(backward_kernel<kKind, kHardReset, kHasGradVSeq, X, S, Sh>, plan, 0);
        }
      }, a.ptr.grad_v_seq != nullptr);
    });
  });
  return status;
}

}  // namespace jaxqif::gpu
