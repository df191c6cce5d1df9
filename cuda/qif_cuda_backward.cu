// The backward kernels of one surrogate (JAXQIF_SURROGATE, a SurrogateKind enumerator set by
// CMake). Seven of these translation units, one per surrogate, compile in parallel.
#include "qif_cuda_kernels.cuh"

#ifndef JAXQIF_SURROGATE
#error "compile with -DJAXQIF_SURROGATE=<SurrogateKind enumerator>, e.g. kSigmoid"
#endif

namespace jaxqif::gpu {
JAXQIF_BACKWARD_INSTANCES(, JAXQIF_SURROGATE)
}  // namespace jaxqif::gpu
