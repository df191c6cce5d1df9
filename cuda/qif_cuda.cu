// XLA FFI handlers of the nvcc-built CUDA kernels: check the call and launch it on XLA's stream
// (launch/cuda_launch.h). No kernel is compiled here.
#include <cuda_runtime.h>

#include <cstdint>

#include "launch/backward_launch.h"  // with_surrogate_reset
#include "launch/cuda_launch.h"
#include "launch/launch.h"  // check_launchable
#include "qif_ffi.h"
#include "qif_math.h"
#include "static_switch.h"
#include "xla/ffi/api/ffi.h"

namespace jaxqif {

namespace {

ffi::Error cuda_forward(cudaStream_t stream, const ForwardCall& call) {
  JAXQIF_RETURN_IF_ERROR(gpu::check_launchable(call.layout));
  return gpu::cuda_launch_forward(call, stream);
}

ffi::Error cuda_backward(cudaStream_t stream, const BackwardCall& call) {
  JAXQIF_RETURN_IF_ERROR(gpu::check_launchable(call.layout));
  return gpu::with_surrogate_reset(call, [&]<SurrogateKind kKind, bool kHardReset>() {
    return gpu::cuda_launch_backward<kKind, kHardReset>(call, stream);
  });
}

// v2: neuron parameters as numbers; v3: and any of them as arrays (jaxqif/_library.py).
using CudaForward = ForwardHandler<cuda_forward, cudaStream_t>;
using CudaBackward = BackwardHandler<cuda_backward, cudaStream_t>;
using CudaForwardV3 = ForwardHandlerV3<cuda_forward, cudaStream_t>;
using CudaBackwardV3 = BackwardHandlerV3<cuda_backward, cudaStream_t>;

}  // namespace
}  // namespace jaxqif

namespace ffi = xla::ffi;

// The handlers only launch on XLA's stream: no allocation, no synchronization, so XLA may
// capture them in CUDA graphs.
#define JAXQIF_CUDA_HANDLER(SYMBOL, HANDLER, BIND)                                           \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(                                                             \
      SYMBOL, jaxqif::HANDLER{},                                                             \
      jaxqif::BIND(ffi::Ffi::Bind().Ctx<ffi::PlatformStream<cudaStream_t>>()),               \
      {ffi::Traits::kCmdBufferCompatible});
JAXQIF_CUDA_HANDLER(JaxqifForwardCuda, CudaForward, bind_forward)
JAXQIF_CUDA_HANDLER(JaxqifBackwardCuda, CudaBackward, bind_backward)
JAXQIF_CUDA_HANDLER(JaxqifForwardCudaV3, CudaForwardV3, bind_forward_v3)
JAXQIF_CUDA_HANDLER(JaxqifBackwardCudaV3, CudaBackwardV3, bind_backward_v3)
#undef JAXQIF_CUDA_HANDLER
