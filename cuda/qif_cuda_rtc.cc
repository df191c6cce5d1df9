// XLA FFI handlers of the run-time compiled CUDA kernels: the same targets, attributes, checks
// and launches as the nvcc-built library's (qif_cuda.cu), with the launcher of rtc/rtc_launcher.h:
// each kernel instance compiled by NVRTC the first time a device needs it. Built by the host
// compiler alone (no CUDA toolkit); the driver is resolved at run time.
#include <cstdint>
#include <cstring>
#include <string>

#include "launch/backward_launch.h"  // with_surrogate_reset
#include "launch/forward_launch.h"
#include "launch/launch.h"  // check_launchable
#include "qif_ffi.h"
#include "rtc/driver.h"
#include "rtc/rtc_launch.h"
#include "rtc/rtc_launcher.h"
#include "xla/ffi/api/ffi.h"

namespace jaxqif {

namespace rtc {

ffi::Error rtc_launch_forward(const ForwardCall& call, CUstream stream) {
  RtcLauncher launcher;
  JAXQIF_RETURN_IF_ERROR(RtcLauncher::for_stream(stream, &launcher));
  return gpu::launch_forward(call, launcher);
}

}  // namespace rtc

namespace {

using rtc::CUstream;

ffi::Error rtc_forward(CUstream stream, const ForwardCall& call) {
  JAXQIF_RETURN_IF_ERROR(gpu::check_launchable(call.layout));
  return rtc::rtc_launch_forward(call, stream);
}

ffi::Error rtc_backward(CUstream stream, const BackwardCall& call) {
  JAXQIF_RETURN_IF_ERROR(gpu::check_launchable(call.layout));
  return gpu::with_surrogate_reset(call, [&]<SurrogateKind kKind, bool kHardReset>() {
    return rtc::rtc_launch_backward<kKind, kHardReset>(call, stream);
  });
}

// v2: neuron parameters as numbers; v3: and any of them as arrays (jaxqif/_library.py).
using RtcForward = ForwardHandler<rtc_forward, CUstream>;
using RtcBackward = BackwardHandler<rtc_backward, CUstream>;
using RtcForwardV3 = ForwardHandlerV3<rtc_forward, CUstream>;
using RtcBackwardV3 = BackwardHandlerV3<rtc_backward, CUstream>;

}  // namespace
}  // namespace jaxqif

namespace ffi = xla::ffi;

// As the nvcc-built library's: only launches on XLA's stream (a kernel's first use compiles and
// loads it on a thread of its own, outside any graph capture), so XLA may capture them in CUDA
// graphs. The symbols are the nvcc-built library's too: jaxqif/_library.py registers either.
#define JAXQIF_RTC_HANDLER(SYMBOL, HANDLER, BIND)                                   \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(                                                    \
      SYMBOL, jaxqif::HANDLER{},                                                    \
      jaxqif::BIND(ffi::Ffi::Bind().Ctx<ffi::PlatformStream<jaxqif::rtc::CUstream>>()), \
      {ffi::Traits::kCmdBufferCompatible});
JAXQIF_RTC_HANDLER(JaxqifForwardCuda, RtcForward, bind_forward)
JAXQIF_RTC_HANDLER(JaxqifBackwardCuda, RtcBackward, bind_backward)
JAXQIF_RTC_HANDLER(JaxqifForwardCudaV3, RtcForwardV3, bind_forward_v3)
JAXQIF_RTC_HANDLER(JaxqifBackwardCudaV3, RtcBackwardV3, bind_backward_v3)
#undef JAXQIF_RTC_HANDLER

// The Python side's entry points (jaxqif/_rtc.py).
extern "C" {

// Registers the compiler of kernel instances (rtc::Compiler); nullptr unregisters it.
__attribute__((visibility("default"))) void JaxqifRtcSetCompiler(jaxqif::rtc::Compiler compiler) {
  jaxqif::rtc::compiler().store(compiler);
}

// Every kernel instance the launches can ask for, one per line ("F name" or "B name").
__attribute__((visibility("default"))) const char* JaxqifRtcInstances() {
  static const std::string joined = [] {
    std::string all;
    for (const std::string& name : jaxqif::rtc::instance_names()) all += name + "\n";
    return all;
  }();
  return joined.c_str();
}

}  // extern "C"
