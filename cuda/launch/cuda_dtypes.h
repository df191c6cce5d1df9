// The CUDA side of the input dtypes (DTypeTraits, qif_ffi.h): each one's device input type and
// the element type of its tensor maps (the bulk forward). Their conversions to and from the
// state type are kernels/stream_io.cuh's to_state / from_state.
#pragma once

#include <cuda.h>  // CUtensorMapDataType
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "qif_ffi.h"

namespace jaxqif::gpu {

template <ffi::DataType kDType, typename X, CUtensorMapDataType kMap>
struct CudaDTypeOf : PlatformDType<kDType, X> {
  static constexpr CUtensorMapDataType kTensorMap = kMap;
};

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

}  // namespace jaxqif::gpu
