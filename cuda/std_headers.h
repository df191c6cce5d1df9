// The few standard-library pieces that the kernel headers use (fixed-width integers, type
// traits, FLT_MAX / DBL_MAX), from the C++ library or, under NVRTC (the run-time compiled
// path), which ships no standard headers, from libcu++ (CCCL), whose cuda::std names are made
// visible as std:: names.
#pragma once

#if defined(__CUDACC_RTC__)
#include <cuda/std/cfloat>
#include <cuda/std/cstddef>
#include <cuda/std/cstdint>
#include <cuda/std/type_traits>
namespace std {
using namespace ::cuda::std;
}  // namespace std
#if !defined(FLT_MAX)  // <cuda/std/cfloat> leaves them to the compiler's own
#define FLT_MAX __FLT_MAX__
#define DBL_MAX __DBL_MAX__
#endif
#else
#include <cfloat>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#endif
