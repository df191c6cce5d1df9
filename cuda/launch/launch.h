// What the forward and backward launches share, for every launcher: a launcher (the nvcc-built
// library's CudaLauncher, launch/cuda_launcher.cuh, or the run-time compiled path's RtcLauncher,
// rtc/rtc_launcher.h) gives the device's properties, encodes tensor maps and launches a kernel
// instance (launch/kernel_instances.h) on the call's stream:
//
//   template <ffi::DataType kDType> using DType = ...;  // an input dtype's traits (qif_ffi.h)
//   const DeviceProperties& device();
//   bool has_tensor_maps();                               // the driver encodes them
//   ffi::Error encode_tensor_map(TensorMap*, ffi::DataType, const void* data,
//                                const uint64_t dims[3], const uint64_t strides[2],
//                                const uint32_t box[3]);
//   template <typename Kernel, typename... Args>
//   ffi::Error launch(Kernel, const Grid&, size_t shared_bytes, const Args&... args);
//
// Plain C++: no CUDA header.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "launch/kernel_instances.h"
#include "launch/plan.h"
#include "qif_buffers.h"
#include "qif_ffi.h"
#include "qif_math.h"

namespace jaxqif::gpu {

// Blocks, and threads per block (x, y).
struct Grid {
  unsigned int blocks;
  unsigned int threads_x;
  unsigned int threads_y = 1;
};

// What a launch is left with when no kernel serves the call: a dtype or a plan outside the
// lists, which the handler's checks and choose_plan rule out.
inline ffi::Error no_kernel_for_call() {
  return ffi::Error::Internal("jaxqif: internal error: no kernel serves this call");
}

// Grids are at most 2^31 - 1 blocks of at least 32 threads.
inline ffi::Error check_launchable(const Layout& l) {
  if (l.neurons() > int64_t{32} * 0x7fffffff) {
    return ffi::Error::InvalidArgument("jaxqif: too many neurons for one launch");
  }
  return ffi::Error::Success();
}

inline bool all_aligned(std::initializer_list<const void*> buffers) {
  bool aligned = true;
  for (const void* b : buffers) aligned &= reinterpret_cast<uintptr_t>(b) % 16 == 0;
  return aligned;
}

// A launch's arguments (as deduced from `const Args&...`) must be exactly the kernel's
// parameters: a run-time compiled kernel takes them as raw bytes.
template <typename Kernel, typename... Args>
constexpr bool takes_arguments() {
  return std::is_same<typename Kernel::Parameters, KernelArgs<Args...>>::value;
}

// Launches kernel on one plan's grid: (pointers, steps, inner, groups, params, v_init, more...),
// `more` being the per-neuron kernels' NeuronValues.
template <typename Launcher, typename Kernel, typename Pointers, typename S, typename... More>
ffi::Error launch_plan(Launcher& launcher, Kernel kernel, const LaunchPlan& plan,
                       size_t shared_bytes_per_thread, const Pointers& ptr, const Layout& l,
                       const QifParams<S>& params, double v_init_value, const More&... more) {
  const Grid grid{plan.blocks(), static_cast<unsigned int>(plan.groups_per_block()),
                  static_cast<unsigned int>(plan.segments)};
  return launcher.launch(kernel, grid, shared_bytes_per_thread * plan.threads_per_block, ptr,
                         l.steps, l.inner, plan.groups, params, static_cast<S>(v_init_value),
                         more...);
}

}  // namespace jaxqif::gpu
