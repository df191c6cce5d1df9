// The forward's launch, as the handlers (qif_cuda.cu) and the harnesses call it. Defined in
// launch/forward_launch.cu, the one translation unit that compiles forward kernels.
#pragma once

#include <cuda_runtime.h>

#include "qif_buffers.h"
#include "qif_ffi.h"

namespace jaxqif::gpu {

struct ForwardLaunch {
  ForwardPointers ptr;
  Layout layout;
  ffi::DataType input_dtype;
  double tau, v_c, a0, v_threshold, v_rest, v_reset;
  bool hard_reset;
  double v_init_value;
};

// Launches the forward of one call on `stream` (the plan: launch/plan.h); the launch status.
cudaError_t launch_forward(const ForwardLaunch& a, cudaStream_t stream);

}  // namespace jaxqif::gpu
