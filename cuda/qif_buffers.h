// The arrays of one call as the kernels see them: their [outer, T, inner] layout and the
// pointers to them. Plain C++ (no CUDA, no XLA FFI): shared by the handlers, the launch plans and
// the kernels.
#pragma once

#include "std_headers.h"

namespace jaxqif {

// The kernels see every array as [outer, T, inner] in row-major order: outer is the product of
// the axes before time, inner of those after. Element (o, t, i) sits at (o * T + t) * inner + i,
// and neuron n = o * inner + i. Any time axis and any vmapped axis map onto this with no copy.
struct Layout {
  int64_t outer = 1;
  int64_t steps = 0;
  int64_t inner = 1;
  int64_t neurons() const { return outer * inner; }
  int64_t elements() const { return outer * steps * inner; }
};

struct ForwardPointers {
  const void* x;
  const void* v_init;  // nullptr: every neuron starts at v_init_value
  void* spikes;
  void* v_final;      // nullptr when not wanted
  void* v_seq;        // nullptr when not stored
  void* checkpoints;  // nullptr when not saved (or none to save: a single interval)
};

struct BackwardPointers {
  const void* grad_spikes;   // nullptr when symbolically zero
  const void* grad_v_seq;    // nullptr when symbolically zero
  const void* grad_v_final;  // nullptr when symbolically zero
  const void* x;
  const void* checkpoints;  // nullptr when there is a single interval
  const void* v_init;       // nullptr: every neuron starts at v_init_value
  void* grad_x;
  void* grad_v_init;  // nullptr when v_init is not differentiated
};

// The neuron parameters that may be given as arrays (jaxqif/_params.py's NAMES, in that order).
enum ParamIndex : int { kTau, kVC, kA0, kVThreshold, kVRest, kVReset, kNumParams };

// n % count by a multiply and a shift (Granlund and Montgomery, "Division by invariant integers
// using multiplication"), for n and count below 2^31; larger ones divide (wrap_index,
// qif_math.h). The per-neuron kernels look each parameter of each neuron up at n % count, and
// a division of 64-bit integers is a software routine of some 70 instructions on the GPU (the
// H100 benchmark moved by a few percent only when this replaced it: not what bounds that path).
struct IndexWrap {
  static constexpr int64_t kFastLimit = int64_t(1) << 31;
  int64_t count = 1;
  uint32_t multiplier = 0;  // ceil(2^(32 + shift) / count) - 2^32
  uint32_t shift = 0;       // ceil(log2(count))

  IndexWrap() = default;
  explicit IndexWrap(int64_t divisor) : count(divisor) {
    if (divisor >= kFastLimit) return;
    while ((int64_t(1) << shift) < divisor) ++shift;
    multiplier = static_cast<uint32_t>(
        (uint64_t(1) << 32) * ((uint64_t(1) << shift) - static_cast<uint64_t>(divisor)) /
            static_cast<uint64_t>(divisor) + 1);
  }
};

// The parameters given as arrays, in the state type: parameter j's neuron n takes
// values[j][n % wraps[j].count] (a compact array: the trailing block of the neuron shape it
// varies over, whose size divides the neuron count); values[j] is nullptr where parameter j is
// a number (the settings').
struct ParamArrays {
  const void* values[kNumParams] = {};
  IndexWrap wraps[kNumParams] = {};
  bool any() const {
    for (const void* v : values) {
      if (v) return true;
    }
    return false;
  }
};

// The backward's gradients of the parameters, where wanted (nullptr elsewhere). Each has
// `count` elements: one per neuron (count = the neuron count), or one per neuron of a trailing
// block of `count` neurons that every parameter array tiles (jaxqif/_params.py), element k then
// summed over the neurons n with n % count == k (the block's copies), which share the values of
// every parameter.
struct ParamGrads {
  void* values[kNumParams] = {};
  int64_t count = 0;
};

// The kernels' arguments where some parameter is an array.
struct ForwardArrays : ForwardPointers {
  ParamArrays params;
};
struct BackwardArrays : BackwardPointers {
  ParamArrays params;
  ParamGrads grads;
};

}  // namespace jaxqif
