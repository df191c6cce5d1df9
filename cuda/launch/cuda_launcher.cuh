// The nvcc-built library's launcher (the interface: launch/launch.h): kernels by address
// (kernel_function, one overload per kernel instance type, beside the kernels in
// launch/cuda_forward.cu and launch/cuda_backward.cuh), launched with the runtime API on XLA's
// stream; the device's properties read once per process; the driver's tensor-map encoder.
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>  // the driver's tensor-map encoder

#include <bit>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>

#include "launch/kernel_instances.h"
#include "launch/launch.h"
#include "launch/plan.h"
#include "qif_ffi.h"

namespace jaxqif::gpu {

template <ffi::DataType kDType, typename X, CUtensorMapDataType kMap>
struct CudaDTypeOf : PlatformDType<kDType, X> {
  static constexpr CUtensorMapDataType kTensorMap = kMap;
};

// Each input dtype's device type and the element type of its tensor maps.
template <ffi::DataType kDType>
struct CudaDType;
template <>
struct CudaDType<ffi::DataType::F16>
    : CudaDTypeOf<ffi::DataType::F16, __half, CU_TENSOR_MAP_DATA_TYPE_FLOAT16> {};
template <>
struct CudaDType<ffi::DataType::BF16>
    : CudaDTypeOf<ffi::DataType::BF16, __nv_bfloat16, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16> {};
template <>
struct CudaDType<ffi::DataType::F32>
    : CudaDTypeOf<ffi::DataType::F32, float, CU_TENSOR_MAP_DATA_TYPE_FLOAT32> {};
template <>
struct CudaDType<ffi::DataType::F64>
    : CudaDTypeOf<ffi::DataType::F64, double, CU_TENSOR_MAP_DATA_TYPE_FLOAT64> {};

static_assert(sizeof(TensorMap) == sizeof(CUtensorMap) && alignof(TensorMap) >= alignof(CUtensorMap),
              "TensorMap holds a CUtensorMap");

inline ffi::Error cuda_status(const char* what, cudaError_t status) {
  if (status == cudaSuccess) return ffi::Error::Success();
  return ffi::Error::Internal(std::string("jaxqif: ") + what + " failed: " +
                              cudaGetErrorString(status));
}

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

// The driver's tensor-map encoder, or nullptr if the driver has none.
inline PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 encoder = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
#if CUDART_VERSION >= 12050
    const cudaError_t status = cudaGetDriverEntryPointByVersion(
        "cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found);
#else
    const cudaError_t status =
        cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", &fn, cudaEnableDefault, &found);
#endif
    if (status != cudaSuccess || found != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      fn = nullptr;
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  return encoder;
}

// A kernel argument as the kernel takes it: the tensor maps as the driver's type.
template <typename T>
const T& device_argument(const T& value) {
  return value;
}
inline CUtensorMap device_argument(const TensorMap& map) { return std::bit_cast<CUtensorMap>(map); }

class CudaLauncher {
 public:
  template <ffi::DataType kDType>
  using DType = CudaDType<kDType>;

  explicit CudaLauncher(cudaStream_t stream) : stream_(stream) {}

  const DeviceProperties& device() const { return device_properties(); }
  bool has_tensor_maps() const { return tensor_map_encoder() != nullptr; }

  ffi::Error encode_tensor_map(TensorMap* map, ffi::DataType dtype, const void* data,
                               const uint64_t dims[3], const uint64_t strides[2],
                               const uint32_t box[3]) const {
    CUtensorMapDataType type = CU_TENSOR_MAP_DATA_TYPE_FLOAT32;
    dispatch_dtype<CudaDType>(dtype, [&]<typename D>() { type = D::kTensorMap; });
    const cuuint32_t element_strides[3] = {1, 1, 1};
    const CUresult status = tensor_map_encoder()(
        reinterpret_cast<CUtensorMap*>(map), type, 3, const_cast<void*>(data), dims, strides, box,
        element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_NONE,
        CU_TENSOR_MAP_L2_PROMOTION_NONE, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    return cuda_status("encoding a tensor map",
                       status == CUDA_SUCCESS ? cudaSuccess : cudaErrorInvalidValue);
  }

  template <typename Kernel, typename... Args>
  ffi::Error launch(Kernel kernel, const Grid& grid, size_t shared, const Args&... args) const {
    static_assert(takes_arguments<Kernel, Args...>(), "the arguments are the kernel instance's Parameters");
    // Its address, checked against the instance's Parameters: kernel_function's overloads sit beside
    // the kernels (launch/cuda_forward.cu, launch/cuda_backward.cuh).
    void (*function)(std::decay_t<decltype(device_argument(args))>...) = kernel_function(kernel);
    if (shared > 48 * 1024) {  // above the default limit a kernel must opt in (per device)
      const cudaError_t status = cudaFuncSetAttribute(
          function, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared));
      if (status != cudaSuccess) return cuda_status("launching a kernel", status);
    }
    function<<<grid.blocks, dim3(grid.threads_x, grid.threads_y), shared, stream_>>>(
        device_argument(args)...);
    return cuda_status("launching a kernel", cudaGetLastError());
  }

 private:
  cudaStream_t stream_;
};

}  // namespace jaxqif::gpu
