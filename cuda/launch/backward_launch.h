// The backward's launch, as the handlers (qif_cuda.cu) and the harnesses call it: declared here,
// defined in launch/backward_launch.cuh and instantiated one surrogate per translation unit
// (backward_<Surrogate>.cu, which CMakeLists.txt generates from the surrogate list), so that the
// seven compile in parallel and none compiles a forward kernel.
#pragma once

#include <cuda_runtime.h>

#include "qif_ffi.h"  // BackwardCall
#include "surrogates.h"

namespace jaxqif::gpu {

// Launches the backward of one checked call with surrogate kKind (the one its settings name) on
// `stream`; the launch status.
template <SurrogateKind kKind, bool kHardReset>
cudaError_t launch_backward(const BackwardCall& call, cudaStream_t stream);

// The instances of one surrogate of JAXQIF_SURROGATES: PREFIX = extern declares them, PREFIX
// empty defines them (in that surrogate's translation unit).
#define JAXQIF_BACKWARD_INSTANCES(PREFIX, NAME)                                    \
  PREFIX template cudaError_t launch_backward<SurrogateKind::k##NAME, true>(        \
      const BackwardCall&, cudaStream_t);                                           \
  PREFIX template cudaError_t launch_backward<SurrogateKind::k##NAME, false>(       \
      const BackwardCall&, cudaStream_t);

// Compiled in the surrogates' own translation units, never by an includer.
#define JAXQIF_EXTERN_BACKWARD_INSTANCES(NAME, ID) JAXQIF_BACKWARD_INSTANCES(extern, NAME)
JAXQIF_SURROGATES(JAXQIF_EXTERN_BACKWARD_INSTANCES)
#undef JAXQIF_EXTERN_BACKWARD_INSTANCES

}  // namespace jaxqif::gpu
