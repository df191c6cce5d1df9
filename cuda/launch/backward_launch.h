// The backward's launch, as the handlers (qif_cuda.cu) and the harnesses call it: declared here,
// defined in launch/backward_launch.cuh and instantiated one surrogate per translation unit
// (backward_<Surrogate>.cu, which CMakeLists.txt generates from the surrogate list), so that the
// seven compile in parallel and none compiles a forward kernel.
#pragma once

#include <cuda_runtime.h>

#include "qif_ffi.h"  // BackwardCall
#include "qif_math.h"

namespace jaxqif::gpu {

// Launches the backward of one checked call with surrogate kKind (the one its settings name) on
// `stream`; the launch status.
template <SurrogateKind kKind, bool kHardReset>
cudaError_t launch_backward(const BackwardCall& call, cudaStream_t stream);

// PREFIX = extern declares the instances of one surrogate, PREFIX empty defines them.
#define JAXQIF_BACKWARD_INSTANCES(PREFIX, KIND)                                          \
  PREFIX template cudaError_t launch_backward<SurrogateKind::KIND, true>(                 \
      const BackwardCall&, cudaStream_t);                                               \
  PREFIX template cudaError_t launch_backward<SurrogateKind::KIND, false>(                \
      const BackwardCall&, cudaStream_t);

// Compiled in the surrogates' own translation units, never by an includer.
JAXQIF_BACKWARD_INSTANCES(extern, kSigmoid)
JAXQIF_BACKWARD_INSTANCES(extern, kATan)
JAXQIF_BACKWARD_INSTANCES(extern, kPiecewiseQuadratic)
JAXQIF_BACKWARD_INSTANCES(extern, kPiecewiseExp)
JAXQIF_BACKWARD_INSTANCES(extern, kSoftSign)
JAXQIF_BACKWARD_INSTANCES(extern, kSuperSpike)
JAXQIF_BACKWARD_INSTANCES(extern, kErf)

}  // namespace jaxqif::gpu
