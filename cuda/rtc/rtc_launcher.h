// The run-time compiled path's launcher (the interface: launch/launch.h). A kernel instance is
// compiled by NVRTC the first time a device needs it, through the compiler that jaxqif's Python
// side registers (jaxqif/_rtc.py: CuPy's NVRTC, with a disk cache), loaded into the stream's
// context and launched with the driver API. Plain C++: built with the host compiler alone.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "launch/kernel_instances.h"
#include "launch/launch.h"
#include "launch/plan.h"
#include "qif_ffi.h"
#include "rtc/driver.h"

namespace jaxqif::rtc {

// Compiles one kernel instance for a device of compute capability major * 10 + minor under a
// driver of `driver_version` (cuDriverGetVersion's; part of the cache key): `forward` chooses the
// forward's options (launch/cuda_forward.cu's --fmad=false) or the backward's. Sets *image (a
// cubin or PTX of *image_size bytes) and *lowered_name (the instance's symbol), both valid until
// the process ends; returns 0, or nonzero with a message in error.
using Compiler = int (*)(const char* name, int forward, int compute_capability,
                         int driver_version, const void** image, size_t* image_size,
                         const char** lowered_name, char* error, size_t error_size);

inline std::atomic<Compiler>& compiler() {
  static std::atomic<Compiler> registered{nullptr};
  return registered;
}

// Every kernel instance the launches can ask for ("F name" for a forward instance, "B name" for
// a backward one): what the instantiated launch templates reference, gathered when the library
// loads. The tests compile all of them (tests/test_rtc.py).
inline std::vector<std::string>& instance_names() {
  static std::vector<std::string> names;
  return names;
}

// The contexts (devices) this process has launched in: few, never removed, found by a scan.
constexpr int kMaxContexts = 64;

struct ContextState {
  CUcontext context = nullptr;
  int index = 0;
  int compute_capability = 0;
  gpu::DeviceProperties properties;
};

// This context's state, read from its device the first time.
inline ffi::Error context_state(CUcontext context, const ContextState** out) {
  static std::array<ContextState, kMaxContexts> states;
  static std::atomic<int> count{0};
  static std::mutex adding;
  auto find = [&](int n) -> const ContextState* {
    for (int i = 0; i < n; ++i) {
      if (states[i].context == context) return &states[i];
    }
    return nullptr;
  };
  if ((*out = find(count.load(std::memory_order_acquire))) != nullptr) {
    return ffi::Error::Success();
  }
  std::lock_guard<std::mutex> lock(adding);
  const int n = count.load(std::memory_order_relaxed);
  if ((*out = find(n)) != nullptr) return ffi::Error::Success();
  if (n == kMaxContexts) return ffi::Error::Internal("jaxqif: too many CUDA contexts");
  const Driver& d = driver();
  ContextState& state = states[n];
  ScopedContext scope(context);
  CUdevice device = 0;
  CUresult status = scope.status();
  if (status == kCudaSuccess) status = d.ctx_get_device(&device);
  auto attribute = [&](int which, auto fallback) {
    int value = 0;
    if (status == kCudaSuccess) status = d.device_get_attribute(&value, which, device);
    return status == kCudaSuccess ? static_cast<decltype(fallback)>(value) : fallback;
  };
  gpu::DeviceProperties& p = state.properties;
  p.multiprocessors = attribute(kMultiprocessorCount, p.multiprocessors);
  p.max_shared_per_block = attribute(kMaxSharedPerBlockOptin, p.max_shared_per_block);
  p.shared_per_multiprocessor = attribute(kMaxSharedPerMultiprocessor, p.shared_per_multiprocessor);
  p.threads_per_multiprocessor =
      attribute(kMaxThreadsPerMultiprocessor, p.threads_per_multiprocessor);
  p.compute_capability_major = attribute(kComputeCapabilityMajor, 0);
  const int minor = attribute(kComputeCapabilityMinor, 0);
  if (status != kCudaSuccess) {
    return ffi::Error::Internal("jaxqif: " + d.describe("reading the device's properties", status));
  }
  state.compute_capability = p.compute_capability_major * 10 + minor;
  state.context = context;
  state.index = n;
  count.store(n + 1, std::memory_order_release);
  *out = &state;
  return ffi::Error::Success();
}

// Compiles the instance `name` (through the registered compiler) and loads it into the
// context. On a thread of its own: the stream may be capturing a CUDA graph (XLA's command
// buffers), during which this thread must not load modules; and the compiler is Python code,
// which takes the GIL.
inline ffi::Error compile_and_load(const ContextState& state, const std::string& name,
                                   bool forward, CUfunction* function) {
  const Compiler compile = compiler().load();
  if (compile == nullptr) {
    return ffi::Error::Internal(
        "jaxqif: no compiler registered for the run-time compiled CUDA kernels (jaxqif's Python "
        "package registers it when it loads this library)");
  }
  ffi::Error result = ffi::Error::Success();
  std::thread worker([&] {
    const void* image = nullptr;
    size_t image_size = 0;
    const char* lowered_name = nullptr;
    char message[8192] = "";
    int driver_version = 0;
    driver().driver_get_version(&driver_version);
    if (compile(name.c_str(), forward, state.compute_capability, driver_version, &image,
                &image_size, &lowered_name, message, sizeof message) != 0 ||
        image == nullptr || lowered_name == nullptr) {
      result = ffi::Error::Internal("jaxqif: compiling the kernel " + name + " failed: " +
                                    message);
      return;
    }
    const Driver& d = driver();
    ScopedContext scope(state.context);
    CUmodule module = nullptr;
    CUresult status = scope.status();
    if (status == kCudaSuccess) status = d.module_load_data(&module, image);
    if (status == kCudaSuccess) status = d.module_get_function(function, module, lowered_name);
    if (status != kCudaSuccess) {
      result = ffi::Error::Internal("jaxqif: " + d.describe(("loading " + name).c_str(), status));
    }
  });
  worker.join();
  return result;
}

// Per kernel instance: its name in instance_names(), and its function in each context.
template <typename Kernel>
struct Instance {
  static inline const bool registered = [] {
    instance_names().push_back((Kernel::kForward ? "F " : "B ") + Kernel::name());
    return true;
  }();
  static inline std::array<std::atomic<CUfunction>, kMaxContexts> functions{};

  static ffi::Error function(const ContextState& state, CUfunction* out) {
    (void)registered;
    std::atomic<CUfunction>& slot = functions[state.index];
    if ((*out = slot.load(std::memory_order_acquire)) != nullptr) return ffi::Error::Success();
    static std::mutex loading;  // one compilation of an instance at a time
    std::lock_guard<std::mutex> lock(loading);
    if ((*out = slot.load(std::memory_order_acquire)) != nullptr) return ffi::Error::Success();
    JAXQIF_RETURN_IF_ERROR(compile_and_load(state, Kernel::name(), Kernel::kForward, out));
    slot.store(*out, std::memory_order_release);
    return ffi::Error::Success();
  }

  // Lets `function` (this instance in state's context) launch with `shared` bytes of dynamic
  // shared memory. Above 48 KB a kernel must opt in: once per context and size, raised only when
  // a launch needs more, not a driver call at every launch.
  static ffi::Error allow_shared(const ContextState& state, CUfunction function, size_t shared) {
    std::atomic<size_t>& allowed = allowed_shared[state.index];
    if (shared <= 48 * 1024 || shared <= allowed.load(std::memory_order_acquire)) {
      return ffi::Error::Success();
    }
    static std::mutex raising;
    std::lock_guard<std::mutex> lock(raising);
    if (shared <= allowed.load(std::memory_order_relaxed)) return ffi::Error::Success();
    const Driver& d = driver();
    const CUresult status =
        d.func_set_attribute(function, kMaxDynamicSharedSizeBytes, static_cast<int>(shared));
    if (status != kCudaSuccess) {
      return ffi::Error::Internal("jaxqif: " + d.describe("opting in to shared memory", status));
    }
    allowed.store(shared, std::memory_order_release);
    return ffi::Error::Success();
  }

 private:
  static inline std::array<std::atomic<size_t>, kMaxContexts> allowed_shared{};
};

// The input types as the host sees them: only their size matters here (the kernels see
// __half and __nv_bfloat16; kernel_instances.h names them by dtype).
template <ffi::DataType kDType>
struct RtcDType;
template <>
struct RtcDType<ffi::DataType::F16> : PlatformDType<ffi::DataType::F16, uint16_t> {
  static constexpr int kTensorMap = kTensorMapFloat16;
};
template <>
struct RtcDType<ffi::DataType::BF16> : PlatformDType<ffi::DataType::BF16, uint16_t> {
  static constexpr int kTensorMap = kTensorMapBFloat16;
};
template <>
struct RtcDType<ffi::DataType::F32> : PlatformDType<ffi::DataType::F32, float> {
  static constexpr int kTensorMap = kTensorMapFloat32;
};
template <>
struct RtcDType<ffi::DataType::F64> : PlatformDType<ffi::DataType::F64, double> {
  static constexpr int kTensorMap = kTensorMapFloat64;
};

class RtcLauncher {
 public:
  template <ffi::DataType kDType>
  using DType = RtcDType<kDType>;

  // The launcher of XLA's stream: its context's state (read once per context).
  static ffi::Error for_stream(CUstream stream, RtcLauncher* out) {
    const Driver& d = driver();
    if (!d.error.empty()) return ffi::Error::Internal("jaxqif: " + d.error);
    CUcontext context = nullptr;
    const CUresult status = d.stream_get_ctx(stream, &context);
    if (status != kCudaSuccess) {
      return ffi::Error::Internal("jaxqif: " + d.describe("finding the stream's context", status));
    }
    out->stream_ = stream;
    return context_state(context, &out->state_);
  }

  const gpu::DeviceProperties& device() const { return state_->properties; }
  bool has_tensor_maps() const { return driver().tensor_map_encode_tiled != nullptr; }

  ffi::Error encode_tensor_map(gpu::TensorMap* map, ffi::DataType dtype, const void* data,
                               const uint64_t dims[3], const uint64_t strides[2],
                               const uint32_t box[3]) const {
    int type = kTensorMapFloat32;
    dispatch_dtype<RtcDType>(dtype, [&]<typename D>() { type = D::kTensorMap; });
    const uint32_t element_strides[3] = {1, 1, 1};
    const Driver& d = driver();
    const CUresult status = d.tensor_map_encode_tiled(
        map, type, 3, const_cast<void*>(data), dims, strides, box, element_strides, 0, 0, 0, 0);
    if (status == kCudaSuccess) return ffi::Error::Success();
    return ffi::Error::Internal("jaxqif: " + d.describe("encoding a tensor map", status));
  }

  template <typename Kernel, typename... Args>
  ffi::Error launch(Kernel, const gpu::Grid& grid, size_t shared, const Args&... args) const {
    static_assert(gpu::takes_arguments<Kernel, Args...>(),
                  "the arguments are the kernel instance's Parameters");
    CUfunction function = nullptr;
    JAXQIF_RETURN_IF_ERROR(Instance<Kernel>::function(*state_, &function));
    JAXQIF_RETURN_IF_ERROR(Instance<Kernel>::allow_shared(*state_, function, shared));
    void* params[] = {const_cast<void*>(static_cast<const void*>(&args))...};
    const Driver& d = driver();
    const CUresult status =
        d.launch_kernel(function, grid.blocks, 1, 1, grid.threads_x, grid.threads_y, 1,
                        static_cast<unsigned int>(shared), stream_, params, nullptr);
    if (status == kCudaSuccess) return ffi::Error::Success();
    return ffi::Error::Internal("jaxqif: " + d.describe("launching a kernel", status));
  }

 private:
  CUstream stream_ = nullptr;
  const ContextState* state_ = nullptr;
};

}  // namespace jaxqif::rtc
