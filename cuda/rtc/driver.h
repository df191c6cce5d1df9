// The few CUDA driver API functions and types that the run-time compiled path uses, declared
// here (values and signatures as cuda.h of CUDA 12 and 13 gives them) and resolved from the
// driver library at run time: the library builds with a host compiler alone, no CUDA toolkit.
#pragma once

#include <dlfcn.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>

namespace jaxqif::rtc {

using CUresult = int;
constexpr CUresult kCudaSuccess = 0;
using CUdevice = int;
using CUcontext = struct CUctx_st*;
using CUmodule = struct CUmod_st*;
using CUfunction = struct CUfunc_st*;
using CUstream = struct CUstream_st*;

// CUdevice_attribute
constexpr int kMultiprocessorCount = 16;
constexpr int kMaxThreadsPerMultiprocessor = 39;
constexpr int kComputeCapabilityMajor = 75;
constexpr int kComputeCapabilityMinor = 76;
constexpr int kMaxSharedPerMultiprocessor = 81;
constexpr int kMaxSharedPerBlockOptin = 97;
// CUfunction_attribute
constexpr int kMaxDynamicSharedSizeBytes = 8;
// CUtensorMapDataType (the *_NONE choices of the other tensor-map enums are 0)
constexpr int kTensorMapFloat16 = 6;
constexpr int kTensorMapFloat32 = 7;
constexpr int kTensorMapFloat64 = 8;
constexpr int kTensorMapBFloat16 = 9;

struct Driver {
  CUresult (*get_error_string)(CUresult, const char**) = nullptr;
  CUresult (*driver_get_version)(int*) = nullptr;
  CUresult (*stream_get_ctx)(CUstream, CUcontext*) = nullptr;
  CUresult (*ctx_push_current)(CUcontext) = nullptr;
  CUresult (*ctx_pop_current)(CUcontext*) = nullptr;
  CUresult (*ctx_get_device)(CUdevice*) = nullptr;
  CUresult (*device_get_attribute)(int*, int, CUdevice) = nullptr;
  CUresult (*module_load_data)(CUmodule*, const void*) = nullptr;
  CUresult (*module_get_function)(CUfunction*, CUmodule, const char*) = nullptr;
  CUresult (*func_set_attribute)(CUfunction, int, int) = nullptr;
  CUresult (*launch_kernel)(CUfunction, unsigned int, unsigned int, unsigned int, unsigned int,
                            unsigned int, unsigned int, unsigned int, CUstream, void**,
                            void**) = nullptr;
  // nullptr on a driver without tensor maps (before CUDA 12)
  CUresult (*tensor_map_encode_tiled)(void*, int, uint32_t, void*, const uint64_t*,
                                      const uint64_t*, const uint32_t*, const uint32_t*, int, int,
                                      int, int) = nullptr;
  std::string error;  // why the driver could not be used; empty if it can

  // "what: the driver's message" for a failed call.
  std::string describe(const char* what, CUresult status) const {
    const char* message = nullptr;
    if (get_error_string == nullptr || get_error_string(status, &message) != kCudaSuccess ||
        message == nullptr) {
      message = "unknown error";
    }
    return std::string(what) + " failed: " + message + " (CUresult " + std::to_string(status) +
           ")";
  }
};

// The driver, resolved once per process (by name and ABI version, through cuGetProcAddress).
inline const Driver& driver() {
  static const Driver d = [] {
    Driver d;
    void* library = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
    if (library == nullptr) {
      d.error = std::string("the CUDA driver (libcuda.so.1) could not be loaded: ") + dlerror();
      return d;
    }
    using GetProcAddress = CUresult (*)(const char*, void**, int, uint64_t, int*);
    auto get_proc_address =
        reinterpret_cast<GetProcAddress>(dlsym(library, "cuGetProcAddress_v2"));
    if (get_proc_address == nullptr) {
      d.error = "the CUDA driver is older than CUDA 12 (no cuGetProcAddress_v2)";
      return d;
    }
    bool found_all = true;
    auto resolve = [&](auto& fn, const char* name, int version, bool required = true) {
      void* address = nullptr;
      int status = 0;
      if (get_proc_address(name, &address, version, 0, &status) != kCudaSuccess ||
          address == nullptr) {
        if (required && found_all) d.error = std::string("the CUDA driver has no ") + name;
        found_all &= !required;
        return;
      }
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(address);
    };
    resolve(d.get_error_string, "cuGetErrorString", 12000);
    resolve(d.driver_get_version, "cuDriverGetVersion", 12000);
    resolve(d.stream_get_ctx, "cuStreamGetCtx", 12000);
    resolve(d.ctx_push_current, "cuCtxPushCurrent", 12000);
    resolve(d.ctx_pop_current, "cuCtxPopCurrent", 12000);
    resolve(d.ctx_get_device, "cuCtxGetDevice", 12000);
    resolve(d.device_get_attribute, "cuDeviceGetAttribute", 12000);
    resolve(d.module_load_data, "cuModuleLoadData", 12000);
    resolve(d.module_get_function, "cuModuleGetFunction", 12000);
    resolve(d.func_set_attribute, "cuFuncSetAttribute", 12000);
    resolve(d.launch_kernel, "cuLaunchKernel", 12000);
    resolve(d.tensor_map_encode_tiled, "cuTensorMapEncodeTiled", 12000, /*required=*/false);
    return d;
  }();
  return d;
}

// Makes `context` current on this thread for the scope (as the driver calls below need it).
class ScopedContext {
 public:
  explicit ScopedContext(CUcontext context)
      : status_(driver().ctx_push_current(context)) {}
  ~ScopedContext() {
    if (status_ == kCudaSuccess) {
      CUcontext popped = nullptr;
      driver().ctx_pop_current(&popped);
    }
  }
  ScopedContext(const ScopedContext&) = delete;
  ScopedContext& operator=(const ScopedContext&) = delete;
  CUresult status() const { return status_; }

 private:
  CUresult status_;
};

}  // namespace jaxqif::rtc
