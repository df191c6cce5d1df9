// The forward kernel of every plan but the bulk ones: one thread walks a group of kVec adjacent
// neurons through all T steps. The recurrence is serial, but the loads of x it consumes do not
// depend on it, so they are issued well ahead of the step that needs them (StreamReader): in
// registers (wide, narrow, narrow long) or staged through shared memory (staged deep, staged
// shallow; launch/plan.h). Under differentiation it saves V every few steps (checkpoint_interval,
// qif_math.h), from which the backward recomputes H.
//
// Device code only, with no host-only include: a kernel header (see cuda/README.md).
#pragma once

#include "std_headers.h"

#include "kernels/neuron_params.cuh"
#include "kernels/stream_io.cuh"
#include "qif_buffers.h"
#include "qif_math.h"

namespace jaxqif::gpu {

// kCheckpoints: V is saved every checkpoint_interval steps; kVSeq: every step (compile-time, so
// that inference carries no per-step work for what it does not write).
//
// One template for both kinds of call (unlike the other kernels, whose bodies are __device__
// functions shared by two kernels: moved into one, this body compiled to other instruction
// schedules for some scalar instances). The scalar instances: Pointers = ForwardPointers and no
// `numbers`, every neuron with the call's constants p. The per-neuron ones (some parameter given
// as an array): Pointers = ForwardArrays and numbers = the call's NeuronValues, each neuron's
// constants folded once at the start (NeuronParams, kernels/neuron_params.cuh); instantiated with
// kCheckpoints and kVSeq true, they store what the call's pointers ask for (a run-time choice).
template <typename X, typename S, bool kHardReset, bool kCheckpoints, bool kVSeq, typename Sh,
          typename Pointers = ForwardPointers, typename... Numbers>
__global__ void __launch_bounds__(128)
    forward_kernel(Pointers ptr, int64_t steps, int64_t inner, int64_t groups, QifParams<S> p,
                   S v_init_value, Numbers... numbers) {
  constexpr int kVec = Sh::kVec, kChunk = Sh::kChunk;
  constexpr bool kPerNeuron = sizeof...(Numbers) > 0;
  extern __shared__ __align__(16) unsigned char ring[];
  const int64_t group = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (group >= groups) return;
  const int64_t n = group * kVec;
  const auto params = thread_params<kVec>(p, ptr, n, numbers...);
  const bool store_v_seq = kVSeq && (!kPerNeuron || ptr.v_seq);
  const bool store_checkpoints = kCheckpoints && (!kPerNeuron || ptr.checkpoints);
  const int64_t offset = group_offset(n, steps, inner);
  X* spikes = static_cast<X*>(ptr.spikes) + offset;
  S* v_seq = store_v_seq ? static_cast<S*>(ptr.v_seq) + offset : nullptr;
  constexpr int kInterval = checkpoint_interval(sizeof(X));
  S* checkpoints = store_checkpoints
                       ? static_cast<S*>(ptr.checkpoints) +
                             group_offset(n, checkpoint_count(steps, kInterval), inner)
                       : nullptr;

  using Reader = StreamReader<Sh::kStaged, 1, kChunk, X, kVec>;
  Reader x(static_cast<const X*>(ptr.x) + offset, 0, steps, inner, ring);
  Pack<S, kVec> v = initial_state<S, kVec>(ptr.v_init, n, v_init_value);
  for_each_chunk<Sh::kStaged, kChunk, Reader::kAhead>(
      steps, [&](int64_t c) { x.fetch(c); }, [&] { x.next_chunk(); },
      [&](int64_t c, auto full) {
#pragma unroll
        for (int u = 0; u < kChunk; ++u) {
          const int64_t t = c * kChunk + u;
          if (!decltype(full)::value && t >= steps) break;
          const Pack<X, kVec> current = x.take(c, u);
          Pack<X, kVec> spike_out;
#pragma unroll
          for (int k = 0; k < kVec; ++k) {
            const S h = qif_charge(v.v[k], S(to_state(current.v[k])), params[k]);
            const bool spike = qif_fires(h, params[k]);
            spike_out.v[k] = from_state<X>(spike ? S(1) : S(0));
            v.v[k] = qif_reset<kHardReset>(h, spike, params[k]);
          }
          store_pack(spikes + t * inner, spike_out);
          if constexpr (kVSeq) {
            if (store_v_seq) store_pack(v_seq + t * inner, v);
          }
          if constexpr (kCheckpoints) {
            if (store_checkpoints && (t + 1) % kInterval == 0 && t + 1 < steps) {
              store_pack(checkpoints + ((t + 1) / kInterval - 1) * inner, v);
            }
          }
        }
      });
  if (ptr.v_final) store_pack(static_cast<S*>(ptr.v_final) + n, v);
}

}  // namespace jaxqif::gpu
