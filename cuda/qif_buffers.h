// The arrays of one call as the kernels see them: their [outer, T, inner] layout and the
// pointers to them. Plain C++ (no CUDA, no XLA FFI): shared by the handlers, the launch plans and
// the kernels.
#pragma once

#include <cstdint>

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

// The parameters given as arrays, in the state type: parameter j's neuron n takes
// values[j][n % counts[j]] (a compact array: the trailing block of the neuron shape it varies
// over, whose size divides the neuron count); values[j] is nullptr where parameter j is a
// number (the settings').
struct ParamArrays {
  const void* values[kNumParams] = {};
  int64_t counts[kNumParams] = {};
  bool any() const {
    for (const void* v : values) {
      if (v) return true;
    }
    return false;
  }
};

// The backward's per-neuron gradients of the parameters, where wanted (nullptr elsewhere).
struct ParamGrads {
  void* values[kNumParams] = {};
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
