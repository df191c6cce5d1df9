// The kernel instances a launch can choose (launch/forward_launch.h, launch/backward_launch.h),
// as types that plain C++ can name: each stands for one instance of a __global__ template of
// kernels/ (its template arguments; D is an input dtype's traits, qif_ffi.h) and lists the
// parameters it takes (Parameters), which every launcher checks a launch against. The nvcc-built library
// maps each to its kernel's address (launch/cuda_launcher.cuh); the run-time compiled path to
// its source name (name()), which NVRTC instantiates (jaxqif/_rtc.py).
#pragma once

#include <initializer_list>
#include <string>

#include "kernels/shapes.h"
#include "qif_buffers.h"
#include "qif_ffi.h"
#include "qif_math.h"
#include "surrogates.h"

namespace jaxqif::gpu {

template <typename... Args>
struct KernelArgs {};

// A tensor map (the bulk forward's): the driver's CUtensorMap, 128 opaque bytes (aligned to 64
// bytes by CUDA 12's cuda.h, 128 by CUDA 13's), which the launch encodes on the host and passes
// by value.
struct alignas(128) TensorMap {
  unsigned long long opaque[16];
};

namespace names {

inline std::string arg(bool value) { return value ? "true" : "false"; }
inline std::string arg(int value) { return std::to_string(value); }
inline std::string arg(SurrogateKind kind) {
  return std::string("jaxqif::SurrogateKind::k") + surrogate_name(kind);
}
// The device type of an input dtype, and of a state type.
template <typename D>
std::string input() {
  switch (D::kDType) {
    case ffi::DataType::F16: return "__half";
    case ffi::DataType::BF16: return "__nv_bfloat16";
    case ffi::DataType::F32: return "float";
    case ffi::DataType::F64: return "double";
    default: return "?";
  }
}
template <typename S>
std::string state() {
  return sizeof(S) == 8 ? "double" : "float";
}
template <typename Sh>
std::string shape() {
  return "jaxqif::gpu::Shape<" + arg(Sh::kVec) + ", " + arg(Sh::kChunk) + ", " +
         arg(Sh::kStaged) + ">";
}
template <typename Bk>
std::string bulk_shape() {
  return "jaxqif::gpu::BulkShape<" + arg(Bk::kChunk) + ", " + arg(Bk::kSlots) + ", " +
         arg(Bk::kOutSlots) + ">";
}
inline std::string instance(const char* kernel, std::initializer_list<std::string> args) {
  std::string name = std::string("jaxqif::gpu::") + kernel + "<";
  const char* separator = "";
  for (const std::string& a : args) {
    name += separator + a;
    separator = ", ";
  }
  return name + ">";
}

}  // namespace names

// kernels/forward_kernel.cuh: the wide, narrow and staged forwards; numbers only.
template <typename D, bool kHardReset, bool kCheckpoints, bool kVSeq, typename Sh>
struct ForwardKernel {
  using S = typename D::State;
  static constexpr bool kForward = true;
  using Parameters = KernelArgs<ForwardPointers, int64_t, int64_t, int64_t, QifParams<S>, S>;
  static std::string name() {
    return names::instance("forward_kernel",
                           {names::input<D>(), names::state<S>(), names::arg(kHardReset),
                            names::arg(kCheckpoints), names::arg(kVSeq), names::shape<Sh>()});
  }
};

// The same kernel with per-neuron parameters (kStores: a training forward's streams, chosen
// at run time; inference stores none).
template <typename D, bool kHardReset, bool kStores, typename Sh>
struct PerNeuronForwardKernel {
  using S = typename D::State;
  static constexpr bool kForward = true;
  using Parameters = KernelArgs<ForwardArrays, int64_t, int64_t, int64_t, QifParams<S>, S,
                                NeuronValues<S>>;
  static std::string name() {
    return names::instance(
        "forward_kernel",
        {names::input<D>(), names::state<S>(), names::arg(kHardReset), names::arg(kStores),
         names::arg(kStores), names::shape<Sh>(), "jaxqif::ForwardArrays",
         "jaxqif::NeuronValues<" + names::state<S>() + ">"});
  }
};

// kernels/bulk_forward_kernel.cuh: the Hopper forward with its copy warp.
template <typename D, bool kHardReset, bool kCheckpoints, bool kVSeq, typename Bk>
struct BulkForwardKernel {
  using S = typename D::State;
  static constexpr bool kForward = true;
  using Parameters = KernelArgs<TensorMap, TensorMap, ForwardPointers, int64_t, int64_t,
                                int64_t, QifParams<S>, S>;
  static std::string name() {
    return names::instance("bulk_forward_kernel",
                           {names::input<D>(), names::state<S>(), names::arg(kHardReset),
                            names::arg(kCheckpoints), names::arg(kVSeq), names::bulk_shape<Bk>()});
  }
};

template <typename D, bool kHardReset, bool kStores, typename Bk>
struct PerNeuronBulkForwardKernel {
  using S = typename D::State;
  static constexpr bool kForward = true;
  using Parameters = KernelArgs<TensorMap, TensorMap, ForwardArrays, int64_t, int64_t,
                                int64_t, QifParams<S>, S, NeuronValues<S>>;
  static std::string name() {
    return names::instance("per_neuron_bulk_forward_kernel",
                           {names::input<D>(), names::state<S>(), names::arg(kHardReset),
                            names::arg(kStores), names::bulk_shape<Bk>()});
  }
};

// The backward kernels, serial (kernels/backward_kernel.cuh) and time-parallel for few neurons
// (kernels/segmented_backward_kernel.cuh), take the same template arguments and parameters:
// those with numbers, and the per-neuron ones (no kHasGradVSeq: grad_v_seq chosen at run time).
template <SurrogateKind kKind, bool kHardReset, bool kHasGradVSeq, typename D, typename Sh>
struct BackwardInstance {
  using S = typename D::State;
  static constexpr bool kForward = false;
  using Parameters = KernelArgs<BackwardPointers, int64_t, int64_t, int64_t, QifParams<S>, S>;
  static std::string name_of(const char* kernel) {
    return names::instance(kernel, {names::arg(kKind), names::arg(kHardReset),
                                    names::arg(kHasGradVSeq), names::input<D>(),
                                    names::state<S>(), names::shape<Sh>()});
  }
};

template <SurrogateKind kKind, bool kHardReset, typename D, typename Sh>
struct PerNeuronBackwardInstance {
  using S = typename D::State;
  static constexpr bool kForward = false;
  using Parameters = KernelArgs<BackwardArrays, int64_t, int64_t, int64_t, QifParams<S>, S,
                                NeuronValues<S>>;
  static std::string name_of(const char* kernel) {
    return names::instance(kernel, {names::arg(kKind), names::arg(kHardReset), names::input<D>(),
                                    names::state<S>(), names::shape<Sh>()});
  }
};

template <SurrogateKind kKind, bool kHardReset, bool kHasGradVSeq, typename D, typename Sh>
struct BackwardKernel : BackwardInstance<kKind, kHardReset, kHasGradVSeq, D, Sh> {
  static std::string name() { return BackwardKernel::name_of("backward_kernel"); }
};

template <SurrogateKind kKind, bool kHardReset, typename D, typename Sh>
struct PerNeuronBackwardKernel : PerNeuronBackwardInstance<kKind, kHardReset, D, Sh> {
  static std::string name() { return PerNeuronBackwardKernel::name_of("per_neuron_backward_kernel"); }
};

template <SurrogateKind kKind, bool kHardReset, bool kHasGradVSeq, typename D, typename Sh>
struct SegmentedBackwardKernel : BackwardInstance<kKind, kHardReset, kHasGradVSeq, D, Sh> {
  static std::string name() {
    return SegmentedBackwardKernel::name_of("segmented_backward_kernel");
  }
};

template <SurrogateKind kKind, bool kHardReset, typename D, typename Sh>
struct PerNeuronSegmentedBackwardKernel : PerNeuronBackwardInstance<kKind, kHardReset, D, Sh> {
  static std::string name() {
    return PerNeuronSegmentedBackwardKernel::name_of("per_neuron_segmented_backward_kernel");
  }
};

}  // namespace jaxqif::gpu
