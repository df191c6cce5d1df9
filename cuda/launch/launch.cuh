// What the forward and backward launches share (host code): the device's properties as the
// plans take them, the alignment check, and the launch of one kernel of a plan.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <initializer_list>

#include "launch/plan.h"
#include "qif_buffers.h"
#include "qif_math.h"

namespace jaxqif::gpu {

// An attribute of the device, or `fallback` if it cannot be read.
inline int read_device_attribute(cudaDeviceAttr attribute, int fallback) {
  int device = 0, value = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&value, attribute, device) != cudaSuccess) {
    cudaGetLastError();  // leave no sticky error for the launch check
    return fallback;
  }
  return value;
}

// The device's properties, read once per process (as the first device used reports them); one
// that cannot be read keeps DeviceProperties' default.
inline const DeviceProperties& device_properties() {
  static const DeviceProperties properties = [] {
    DeviceProperties d;
    d.multiprocessors = read_device_attribute(cudaDevAttrMultiProcessorCount, d.multiprocessors);
    d.max_shared_per_block = static_cast<size_t>(read_device_attribute(
        cudaDevAttrMaxSharedMemoryPerBlockOptin, static_cast<int>(d.max_shared_per_block)));
    d.shared_per_multiprocessor = static_cast<size_t>(
        read_device_attribute(cudaDevAttrMaxSharedMemoryPerMultiprocessor,
                              static_cast<int>(d.shared_per_multiprocessor)));
    d.threads_per_multiprocessor = read_device_attribute(cudaDevAttrMaxThreadsPerMultiProcessor,
                                                         d.threads_per_multiprocessor);
    d.compute_capability_major =
        read_device_attribute(cudaDevAttrComputeCapabilityMajor, d.compute_capability_major);
    return d;
  }();
  return properties;
}

inline bool all_aligned(std::initializer_list<const void*> buffers) {
  bool aligned = true;
  for (const void* b : buffers) aligned &= reinterpret_cast<uintptr_t>(b) % 16 == 0;
  return aligned;
}

// Launches the kernel of one (plan, types) choice on `stream`; returns the launch status.
// `more`: the per-neuron kernels' last arguments (the call's NeuronValues).
template <typename Kernel, typename Args, typename S, typename... More>
cudaError_t launch(Kernel kernel, const LaunchPlan& plan, size_t shared_bytes_per_thread,
                   cudaStream_t stream, const Args& ptr, const Layout& l,
                   const QifParams<S>& params, double v_init_value, const More&... more) {
  const size_t shared = shared_bytes_per_thread * plan.threads_per_block;
  if (shared > 48 * 1024) {  // above the default limit a kernel must opt in (per device)
    const cudaError_t status =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, shared);
    if (status != cudaSuccess) return status;
  }
  const dim3 block(plan.groups_per_block(), plan.segments);
  kernel<<<plan.blocks(), block, shared, stream>>>(ptr, l.steps, l.inner, plan.groups, params,
                                                   static_cast<S>(v_init_value), more...);
  return cudaGetLastError();
}

}  // namespace jaxqif::gpu
