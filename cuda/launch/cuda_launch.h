// The nvcc-built library's launches, as its handlers (qif_cuda.cu) and the kernel harness call
// them: launch_forward and launch_backward (launch/forward_launch.h, launch/backward_launch.h)
// with a CudaLauncher on `stream`. The forward is defined in launch/cuda_forward.cu; the backward
// in launch/cuda_backward.cuh, instantiated one surrogate per translation unit
// (backward_<Surrogate>.cu, which CMakeLists.txt generates from the surrogate list).
#pragma once

#include <cuda_runtime.h>

#include "qif_ffi.h"  // ForwardCall, BackwardCall
#include "surrogates.h"

namespace jaxqif::gpu {

ffi::Error cuda_launch_forward(const ForwardCall& call, cudaStream_t stream);

template <SurrogateKind kKind, bool kHardReset>
ffi::Error cuda_launch_backward(const BackwardCall& call, cudaStream_t stream);

// The instances of one surrogate of JAXQIF_SURROGATES: PREFIX = extern declares them, PREFIX
// empty defines them (in that surrogate's translation unit).
#define JAXQIF_BACKWARD_INSTANCES(PREFIX, NAME)                                   \
  PREFIX template ffi::Error cuda_launch_backward<SurrogateKind::k##NAME, true>(   \
      const BackwardCall&, cudaStream_t);                                          \
  PREFIX template ffi::Error cuda_launch_backward<SurrogateKind::k##NAME, false>(  \
      const BackwardCall&, cudaStream_t);

// Compiled in the surrogates' own translation units, never by an includer.
#define JAXQIF_EXTERN_BACKWARD_INSTANCES(NAME, ID) JAXQIF_BACKWARD_INSTANCES(extern, NAME)
JAXQIF_SURROGATES(JAXQIF_EXTERN_BACKWARD_INSTANCES)
#undef JAXQIF_EXTERN_BACKWARD_INSTANCES

}  // namespace jaxqif::gpu
