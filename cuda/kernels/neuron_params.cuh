// Where a kernel's threads take their neurons' constants from, and the choices a kernel makes at
// compile time or at run time. Each kernel body is written once and compiled for two kinds of
// call: the call's QifParams for every neuron (SharedParams: the scalar kernels, whose code is
// what it was before array parameters), or each neuron's own (NeuronParams: the per-neuron
// kernels, for calls with some parameter given as an array, which fold their neurons' constants
// once at the start, in registers). The bulk, serial backward and segmented backward bodies are
// __device__ functions that take a params factory (SharedParamsOf, NeuronParamsOf) and two
// __global__ kernels each; forward_kernel is one template (thread_params).
//
// Device code only, with no host-only include: a kernel header (see cuda/README.md).
#pragma once

#include "std_headers.h"

#include "kernels/stream_io.cuh"
#include "qif_buffers.h"
#include "qif_math.h"

namespace jaxqif::gpu {

// A choice a kernel body takes either at compile time (Fixed<true>, Fixed<false>: the scalar
// kernels, one instance per choice) or at run time (bool: the per-neuron kernels, one instance
// for all, a uniform branch). `if (flag)` serves both; kMaybe<Flag> says whether the work can
// happen at all (what to hold registers or shared memory for).
template <bool kValue>
struct Fixed {
  __host__ __device__ constexpr operator bool() const { return kValue; }
};
template <typename Flag>
constexpr bool kMaybe = !std::is_same_v<Flag, Fixed<false>>;

// Every neuron has the call's constants (the scalar kernels: p is the kernel's argument).
template <typename S>
struct SharedParams {
  static constexpr bool kPerNeuron = false;
  const QifParams<S>& p;
  __device__ __forceinline__ const QifParams<S>& operator[](int) const { return p; }
};

// Each of a thread's kVec adjacent neurons n, n + 1, ... has its own: its NeuronValues (each
// parameter from its array, or the call's number) and its QifParams folded from them with the
// call's surrogate constants and detach_reset (`shared`), as the CPU handler folds them
// (qif_cpu.cc, BlockParams). Any n >= 0 reads within the arrays (values[j][n % count]).
template <typename S, int kVec>
class NeuronParams {
 public:
  static constexpr bool kPerNeuron = true;

  __device__ __forceinline__ NeuronParams(int64_t n, const ParamArrays& arrays,
                                          const NeuronValues<S>& numbers,
                                          const QifParams<S>& shared) {
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      values_[k] = NeuronValues<S>::of(n + k, arrays, numbers);
      folded_[k].p = QifParams<S>(values_[k], shared);
    }
  }

  __device__ __forceinline__ const QifParams<S>& operator[](int k) const { return folded_[k].p; }
  __device__ __forceinline__ const NeuronValues<S>& values(int k) const { return values_[k]; }

 private:
  // QifParams has no default constructor: a union leaves it unconstructed until the
  // assignment above (trivially copyable, so the assignment begins its lifetime).
  union Folded {
    QifParams<S> p;
    __device__ __forceinline__ Folded() {}
  };
  Folded folded_[kVec];
  NeuronValues<S> values_[kVec];
};

// The params factories of the kernel bodies: a thread's params from its first neuron n. The
// per-neuron kernels': from the call's arrays, its numbers for the parameters not given as
// arrays (NeuronValues<S>::numbers, on the host) and its QifParams (`shared`), all kernel
// arguments. The scalar kernels': the call's QifParams whatever n.
template <typename S, int kVec>
struct NeuronParamsOf {
  const ParamArrays& arrays;
  const NeuronValues<S>& numbers;
  const QifParams<S>& shared;
  __device__ __forceinline__ NeuronParams<S, kVec> operator()(int64_t n) const {
    return NeuronParams<S, kVec>(n, arrays, numbers, shared);
  }
};

template <typename S>
struct SharedParamsOf {
  const QifParams<S>& p;
  __device__ __forceinline__ SharedParams<S> operator()(int64_t) const { return {p}; }
};

// A thread's params from its first neuron n, for a kernel template that serves both kinds of
// call (forward_kernel): with no numbers, the call's p (SharedParams); with the call's
// NeuronValues, each neuron's own, from the arrays of ptr (ForwardArrays, BackwardArrays).
template <int kVec, typename S, typename Pointers>
__device__ __forceinline__ SharedParams<S> thread_params(const QifParams<S>& p, const Pointers&,
                                                         int64_t) {
  return {p};
}
template <int kVec, typename S, typename Pointers>
__device__ __forceinline__ NeuronParams<S, kVec> thread_params(const QifParams<S>& shared,
                                                               const Pointers& ptr, int64_t n,
                                                               const NeuronValues<S>& numbers) {
  return NeuronParams<S, kVec>(n, ptr.params, numbers, shared);
}

// Each field of ParamGradSums, fn(index, field), in a fixed order: the segmented backward adds
// the warps' sums through shared memory field by field.
constexpr int kParamGradSumFields = 6;
template <typename S, typename Fn>
__device__ __forceinline__ void for_each_sum(ParamGradSums<S>& s, Fn&& fn) {
  static_assert(sizeof(ParamGradSums<S>) == kParamGradSumFields * sizeof(S),
                "for_each_sum: ParamGradSums has a field this list misses");
  fn(0, s.charge);
  fn(1, s.curvature);
  fn(2, s.from_rest);
  fn(3, s.from_c);
  fn(4, s.threshold);
  fn(5, s.reset);
}

// Writes the wanted parameter gradients (grads.values[j] not nullptr) of neurons n .. n + kVec - 1
// from their sums, in one vector store each, as grad_v_init (n is a multiple of kVec, and XLA
// aligns the per-neuron buffers as it aligns grad_v_init's). The neurons'
// values are read again (make_params: NeuronParamsOf), so that the kernels need not hold tau,
// which no step uses, in registers to the end.
template <typename S, int kVec, typename MakeParams>
__device__ __forceinline__ void store_param_grads(const ParamGrads& grads, int64_t n,
                                                  const ParamGradSums<S> (&sums)[kVec],
                                                  const MakeParams& make_params) {
  const NeuronParams<S, kVec> params = make_params(n);
#pragma unroll
  for (int j = 0; j < kNumParams; ++j) {
    S* grad = static_cast<S*>(grads.values[j]);
    if (!grad) continue;
    Pack<S, kVec> pack;
#pragma unroll
    for (int k = 0; k < kVec; ++k) pack.v[k] = sums[k].gradient(j, params.values(k));
    store_pack(grad + n, pack);
  }
}

}  // namespace jaxqif::gpu
