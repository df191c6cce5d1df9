// The forward's launch, as the handlers (qif_cuda.cu) and the harnesses call it. Defined in
// launch/forward_launch.cu, the one translation unit that compiles forward kernels.
#pragma once

#include <cuda_runtime.h>

#include "qif_ffi.h"  // ForwardCall

namespace jaxqif::gpu {

// Launches the forward of one checked call on `stream` (the plan: launch/plan.h); the launch
// status.
cudaError_t launch_forward(const ForwardCall& call, cudaStream_t stream);

}  // namespace jaxqif::gpu
