// The run-time compiled library's launches, as its handlers (qif_cuda_rtc.cc) call them:
// launch_forward and launch_backward (launch/forward_launch.h, launch/backward_launch.h) with an
// RtcLauncher on XLA's stream. The forward is defined in qif_cuda_rtc.cc; the backward below,
// instantiated one surrogate per translation unit (rtc_backward_<Surrogate>.cc, which
// CMakeLists.txt generates from the surrogate list), so that they compile in parallel.
#pragma once

#include "launch/backward_launch.h"
#include "qif_ffi.h"
#include "rtc/driver.h"
#include "rtc/rtc_launcher.h"
#include "surrogates.h"

namespace jaxqif::rtc {

ffi::Error rtc_launch_forward(const ForwardCall& call, CUstream stream);

template <SurrogateKind kKind, bool kHardReset>
ffi::Error rtc_launch_backward(const BackwardCall& call, CUstream stream) {
  RtcLauncher launcher;
  JAXQIF_RETURN_IF_ERROR(RtcLauncher::for_stream(stream, &launcher));
  return gpu::launch_backward<kKind, kHardReset>(call, launcher);
}

// The instances of one surrogate of JAXQIF_SURROGATES: PREFIX = extern declares them, PREFIX
// empty defines them (in that surrogate's translation unit).
#define JAXQIF_RTC_BACKWARD_INSTANCES(PREFIX, NAME)                                  \
  PREFIX template ffi::Error rtc_launch_backward<SurrogateKind::k##NAME, true>(       \
      const BackwardCall&, CUstream);                                                \
  PREFIX template ffi::Error rtc_launch_backward<SurrogateKind::k##NAME, false>(      \
      const BackwardCall&, CUstream);

#define JAXQIF_EXTERN_RTC_BACKWARD_INSTANCES(NAME, ID) JAXQIF_RTC_BACKWARD_INSTANCES(extern, NAME)
JAXQIF_SURROGATES(JAXQIF_EXTERN_RTC_BACKWARD_INSTANCES)
#undef JAXQIF_EXTERN_RTC_BACKWARD_INSTANCES

}  // namespace jaxqif::rtc
