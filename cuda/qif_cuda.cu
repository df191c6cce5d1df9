// XLA FFI handlers of the fused CUDA kernels: check the call and launch it on XLA's stream
// (launch/forward_launch.h, launch/backward_launch.h). No kernel is compiled here.
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "launch/backward_launch.h"
#include "launch/forward_launch.h"
#include "qif_ffi.h"
#include "qif_math.h"
#include "xla/ffi/api/ffi.h"

namespace jaxqif {

namespace {

ffi::Error launch_status(const char* what, cudaError_t status) {
  if (status == cudaSuccess) return ffi::Error::Success();
  return ffi::Error::Internal(std::string("jaxqif: launching the ") + what +
                              " kernel failed: " + cudaGetErrorString(status));
}

// Grids are at most 2^31 - 1 blocks of at least 32 threads.
ffi::Error check_launchable(const Layout& l) {
  if (l.neurons() > int64_t{32} * 0x7fffffff) {
    return ffi::Error::InvalidArgument("jaxqif: too many neurons for one launch");
  }
  return ffi::Error::Success();
}

ffi::Error ForwardImpl(cudaStream_t stream, ffi::AnyBuffer x, ffi::AnyBuffer v_init,
                       ffi::Result<ffi::AnyBuffer> spikes, ffi::Result<ffi::AnyBuffer> v_final,
                       ffi::Result<ffi::AnyBuffer> v_seq, ffi::Result<ffi::AnyBuffer> checkpoints,
                       int64_t time_axis, double tau, double v_c, double a0, double v_threshold,
                       double v_rest, double v_reset, bool hard_reset, double v_init_value,
                       int64_t checkpoint_steps) {
  ForwardCall call;
  JAXQIF_RETURN_IF_ERROR(check_forward(x, v_init, *spikes, *v_final, *v_seq, *checkpoints,
                                       time_axis, checkpoint_steps, &call));
  if (call.layout.elements() == 0) return ffi::Error::Success();
  JAXQIF_RETURN_IF_ERROR(check_launchable(call.layout));
  const gpu::ForwardLaunch launch{
      {x.untyped_data(), data_or_null<void>(v_init), spikes->untyped_data(),
       data_or_null<void>(*v_final), data_or_null<void>(*v_seq),
       data_or_null<void>(*checkpoints)},
      call.layout, call.input_dtype, tau, v_c, a0, v_threshold, v_rest, v_reset, hard_reset,
      v_init_value};
  return launch_status("forward", gpu::launch_forward(launch, stream));
}

ffi::Error BackwardImpl(cudaStream_t stream, ffi::AnyBuffer grad_spikes, ffi::AnyBuffer grad_v_seq,
                        ffi::AnyBuffer grad_v_final, ffi::AnyBuffer x, ffi::AnyBuffer checkpoints,
                        ffi::AnyBuffer v_init, ffi::Result<ffi::AnyBuffer> grad_x,
                        ffi::Result<ffi::AnyBuffer> grad_v_init, int64_t time_axis, double tau,
                        double v_c, double a0, double v_threshold, double v_rest, double v_reset,
                        bool hard_reset, double v_init_value, int64_t checkpoint_steps,
                        bool detach_reset, int64_t surrogate, double alpha) {
  BackwardCall call;
  JAXQIF_RETURN_IF_ERROR(check_backward(grad_spikes, grad_v_seq, grad_v_final, x, checkpoints,
                                        v_init, *grad_x, *grad_v_init, time_axis,
                                        checkpoint_steps, surrogate, &call));
  if (call.layout.elements() == 0) return ffi::Error::Success();
  JAXQIF_RETURN_IF_ERROR(check_launchable(call.layout));
  const gpu::BackwardLaunch launch{
      {data_or_null<void>(grad_spikes), data_or_null<void>(grad_v_seq),
       data_or_null<void>(grad_v_final), x.untyped_data(), data_or_null<void>(checkpoints),
       data_or_null<void>(v_init),
       grad_x->untyped_data(), data_or_null<void>(*grad_v_init)},
      call.layout, call.input_dtype, tau, v_c, a0, v_threshold, v_rest, v_reset, alpha,
      hard_reset, detach_reset, v_init_value};
  const cudaError_t status =
      dispatch_surrogate_reset(surrogate, hard_reset, [&]<SurrogateKind kKind, bool kHardReset>() {
        return gpu::launch_backward<kKind, kHardReset>(launch, stream);
      });
  return launch_status("backward", status);
}

}  // namespace
}  // namespace jaxqif

namespace ffi = xla::ffi;

// Both handlers only launch on XLA's stream: no allocation, no synchronization, so XLA may
// capture them in CUDA graphs.
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxqifForwardCuda, jaxqif::ForwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<ffi::AnyBuffer>()  // x
                                  .Arg<ffi::AnyBuffer>()  // v_init
                                  .Ret<ffi::AnyBuffer>()  // spikes
                                  .Ret<ffi::AnyBuffer>()  // v_final
                                  .Ret<ffi::AnyBuffer>()  // v_seq
                                  .Ret<ffi::AnyBuffer>()  // checkpoints
                                  JAXQIF_NEURON_ATTRS,
                              {ffi::Traits::kCmdBufferCompatible});

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxqifBackwardCuda, jaxqif::BackwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<ffi::AnyBuffer>()  // grad_spikes
                                  .Arg<ffi::AnyBuffer>()  // grad_v_seq
                                  .Arg<ffi::AnyBuffer>()  // grad_v_final
                                  .Arg<ffi::AnyBuffer>()  // x
                                  .Arg<ffi::AnyBuffer>()  // checkpoints
                                  .Arg<ffi::AnyBuffer>()  // v_init
                                  .Ret<ffi::AnyBuffer>()  // grad_x
                                  .Ret<ffi::AnyBuffer>()  // grad_v_init
                                  JAXQIF_BACKWARD_ATTRS,
                              {ffi::Traits::kCmdBufferCompatible});
