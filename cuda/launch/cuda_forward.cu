// The nvcc-built library's forward: launch_forward (launch/forward_launch.h) with a CudaLauncher,
// and the forward kernels' addresses. The only translation unit that compiles forward kernels,
// built with --fmad=false (CMakeLists.txt): no contraction but qif_math.h's explicit fused
// multiply-adds, so that the forward agrees bit for bit with the CPU handler's.
#include "kernels/bulk_forward_kernel.cuh"
#include "kernels/forward_kernel.cuh"
#include "launch/cuda_launch.h"
#include "launch/cuda_launcher.cuh"
#include "launch/forward_launch.h"

namespace jaxqif::gpu {

template <typename D, bool kHardReset, bool kCheckpoints, bool kVSeq, typename Sh>
auto kernel_function(ForwardKernel<D, kHardReset, kCheckpoints, kVSeq, Sh>) {
  return forward_kernel<typename D::Input, typename D::State, kHardReset, kCheckpoints, kVSeq,
                        Sh>;
}
template <typename D, bool kHardReset, bool kStores, typename Sh>
auto kernel_function(PerNeuronForwardKernel<D, kHardReset, kStores, Sh>) {
  using S = typename D::State;
  return forward_kernel<typename D::Input, S, kHardReset, kStores, kStores, Sh, ForwardArrays,
                        NeuronValues<S>>;
}
template <typename D, bool kHardReset, bool kCheckpoints, bool kVSeq, typename Bk>
auto kernel_function(BulkForwardKernel<D, kHardReset, kCheckpoints, kVSeq, Bk>) {
  return bulk_forward_kernel<typename D::Input, typename D::State, kHardReset, kCheckpoints,
                             kVSeq, Bk>;
}
template <typename D, bool kHardReset, bool kStores, typename Bk>
auto kernel_function(PerNeuronBulkForwardKernel<D, kHardReset, kStores, Bk>) {
  return per_neuron_bulk_forward_kernel<typename D::Input, typename D::State, kHardReset,
                                        kStores, Bk>;
}

ffi::Error cuda_launch_forward(const ForwardCall& call, cudaStream_t stream) {
  CudaLauncher launcher(stream);
  return launch_forward(call, launcher);
}

}  // namespace jaxqif::gpu
