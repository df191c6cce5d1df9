// The nvcc-built library's backward: launch_backward (launch/backward_launch.h) with a
// CudaLauncher, and the backward kernels' addresses. Included only by the per-surrogate
// translation units that CMakeLists.txt generates (backward_<Surrogate>.cu: one
// JAXQIF_BACKWARD_INSTANCES each), built with --fmad=true; never with a forward kernel.
#pragma once

#include "kernels/backward_kernel.cuh"
#include "kernels/segmented_backward_kernel.cuh"
#include "launch/backward_launch.h"
#include "launch/cuda_launch.h"
#include "launch/cuda_launcher.cuh"

namespace jaxqif::gpu {

template <SurrogateKind kKind, bool kHardReset, bool kHasGradVSeq, typename D, typename Sh>
auto kernel_function(BackwardKernel<kKind, kHardReset, kHasGradVSeq, D, Sh>) {
  return backward_kernel<kKind, kHardReset, kHasGradVSeq, typename D::Input, typename D::State,
                         Sh>;
}
template <SurrogateKind kKind, bool kHardReset, typename D, typename Sh>
auto kernel_function(PerNeuronBackwardKernel<kKind, kHardReset, D, Sh>) {
  return per_neuron_backward_kernel<kKind, kHardReset, typename D::Input, typename D::State, Sh>;
}
template <SurrogateKind kKind, bool kHardReset, bool kHasGradVSeq, typename D, typename Sh>
auto kernel_function(SegmentedBackwardKernel<kKind, kHardReset, kHasGradVSeq, D, Sh>) {
  return segmented_backward_kernel<kKind, kHardReset, kHasGradVSeq, typename D::Input,
                                   typename D::State, Sh>;
}
template <SurrogateKind kKind, bool kHardReset, typename D, typename Sh>
auto kernel_function(PerNeuronSegmentedBackwardKernel<kKind, kHardReset, D, Sh>) {
  return per_neuron_segmented_backward_kernel<kKind, kHardReset, typename D::Input,
                                              typename D::State, Sh>;
}

template <SurrogateKind kKind, bool kHardReset>
ffi::Error cuda_launch_backward(const BackwardCall& call, cudaStream_t stream) {
  CudaLauncher launcher(stream);
  return launch_backward<kKind, kHardReset>(call, launcher);
}

}  // namespace jaxqif::gpu
