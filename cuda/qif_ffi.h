// What the CPU and CUDA handlers share: the attribute list, and the checks that turn a malformed
// call into an ffi::Error (a Python exception) before any memory is touched.
#pragma once

#include <cstdint>
#include <string>

#include "qif_buffers.h"
#include "qif_math.h"
#include "xla/ffi/api/ffi.h"

namespace jaxqif {

namespace ffi = xla::ffi;

// Steps between checkpoints for inputs of `dtype` (qif_math.h's checkpoint_interval).
inline int checkpoint_interval_of(ffi::DataType dtype) {
  return checkpoint_interval(static_cast<int>(ffi::ByteWidth(dtype)));
}

// The checkpoints' layout for inputs of `dtype` laid out as `l`.
inline Layout checkpoint_layout(const Layout& l, ffi::DataType dtype) {
  return {l.outer, checkpoint_count(l.steps, checkpoint_interval_of(dtype)), l.inner};
}

inline ffi::Error check_checkpoint_steps(ffi::DataType dtype, int64_t checkpoint_steps) {
  const int interval = checkpoint_interval_of(dtype);
  if (checkpoint_steps != interval) {
    return ffi::Error::InvalidArgument(
        "jaxqif: the Python package asks for checkpoints every " +
        std::to_string(checkpoint_steps) + " steps, the kernels save one every " +
        std::to_string(interval) + ": reinstall jaxqif so that both come from one build");
  }
  return ffi::Error::Success();
}

// Also refuses a sequence of no steps, as the Python API does: there would be no defined
// v_final (and the backward no defined grad_v_init) to write.
inline ffi::Error decode_layout(ffi::Span<const int64_t> dims, int64_t time_axis, Layout* layout) {
  const int64_t rank = static_cast<int64_t>(dims.size());
  if (time_axis < 0 || time_axis >= rank) {
    return ffi::Error::InvalidArgument("jaxqif: time_axis " + std::to_string(time_axis) +
                                       " is out of range for an operand of rank " +
                                       std::to_string(rank));
  }
  if (dims[time_axis] == 0) {
    return ffi::Error::InvalidArgument("jaxqif: x has no time steps (T = 0)");
  }
  Layout l;
  for (int64_t a = 0; a < rank; ++a) {
    if (a < time_axis) l.outer *= dims[a];
    if (a > time_axis) l.inner *= dims[a];
  }
  l.steps = dims[time_axis];
  *layout = l;
  return ffi::Error::Success();
}

inline bool is_input_dtype(ffi::DataType t) {
  return t == ffi::DataType::F16 || t == ffi::DataType::BF16 || t == ffi::DataType::F32 ||
         t == ffi::DataType::F64;
}

// float16/bfloat16/float32 inputs keep their state in float32, float64 in float64.
inline ffi::DataType state_dtype_for(ffi::DataType input) {
  return input == ffi::DataType::F64 ? ffi::DataType::F64 : ffi::DataType::F32;
}

// `optional` buffers may have zero elements, meaning "absent" (an unused output, or a cotangent
// that is symbolically zero).
inline ffi::Error check_buffer(const char* name, const ffi::AnyBuffer& buffer, ffi::DataType dtype,
                               int64_t expected_elements, bool optional) {
  if (buffer.element_type() != dtype) {
    return ffi::Error::InvalidArgument(std::string("jaxqif: ") + name + " has the wrong dtype");
  }
  const int64_t n = static_cast<int64_t>(buffer.element_count());
  if (n != expected_elements && !(optional && n == 0)) {
    return ffi::Error::InvalidArgument(std::string("jaxqif: ") + name + " has " +
                                       std::to_string(n) + " elements, expected " +
                                       std::to_string(expected_elements));
  }
  return ffi::Error::Success();
}

// A buffer's data, or nullptr for an absent (zero-element) one.
template <typename T>
T* data_or_null(ffi::AnyBuffer& buffer) {
  return buffer.element_count() ? reinterpret_cast<T*>(buffer.untyped_data()) : nullptr;
}
template <typename T>
const T* data_or_null(const ffi::AnyBuffer& buffer) {
  return buffer.element_count() ? reinterpret_cast<const T*>(buffer.untyped_data()) : nullptr;
}

// Calls fn(X{}, S{}) with the input type X and state type S of `dtype` (already checked to be
// one of the four). Half and BFloat16 are the platform's 16-bit types.
template <typename Half, typename BFloat16, typename Fn>
void dispatch_dtype(ffi::DataType dtype, Fn&& fn) {
  switch (dtype) {
    case ffi::DataType::F16: return fn(Half{}, float{});
    case ffi::DataType::BF16: return fn(BFloat16{}, float{});
    case ffi::DataType::F32: return fn(float{}, float{});
    default: return fn(double{}, double{});
  }
}

#define JAXQIF_RETURN_IF_ERROR(expr)      \
  do {                                    \
    ffi::Error _status = (expr);          \
    if (_status.failure()) return _status; \
  } while (0)

struct ForwardCall {
  Layout layout;
  ffi::DataType input_dtype;
  bool store_v_seq;
  bool save_checkpoints;
};

// Forward: x [.., T, ..], v_init [neurons] (optional: absent, every neuron starts at the
// v_init_value attribute) -> spikes (x's dtype), v_final, v_seq and the checkpoints (each
// optional: absent, not written; state dtype).
inline ffi::Error check_forward(const ffi::AnyBuffer& x, const ffi::AnyBuffer& v_init,
                                const ffi::AnyBuffer& spikes, const ffi::AnyBuffer& v_final,
                                const ffi::AnyBuffer& v_seq, const ffi::AnyBuffer& checkpoints,
                                int64_t time_axis, int64_t checkpoint_steps, ForwardCall* call) {
  if (!is_input_dtype(x.element_type())) {
    return ffi::Error::InvalidArgument("jaxqif: x must be float16, bfloat16, float32 or float64");
  }
  JAXQIF_RETURN_IF_ERROR(check_checkpoint_steps(x.element_type(), checkpoint_steps));
  JAXQIF_RETURN_IF_ERROR(decode_layout(x.dimensions(), time_axis, &call->layout));
  const Layout& l = call->layout;
  const ffi::DataType in = x.element_type(), st = state_dtype_for(in);
  JAXQIF_RETURN_IF_ERROR(check_buffer("v_init", v_init, st, l.neurons(), true));
  JAXQIF_RETURN_IF_ERROR(check_buffer("spikes", spikes, in, l.elements(), false));
  JAXQIF_RETURN_IF_ERROR(check_buffer("v_final", v_final, st, l.neurons(), true));
  JAXQIF_RETURN_IF_ERROR(check_buffer("v_seq", v_seq, st, l.elements(), true));
  JAXQIF_RETURN_IF_ERROR(
      check_buffer("checkpoints", checkpoints, st, checkpoint_layout(l, in).elements(), true));
  call->input_dtype = in;
  call->store_v_seq = v_seq.element_count() != 0;
  call->save_checkpoints = checkpoints.element_count() != 0;
  return ffi::Error::Success();
}

struct BackwardCall {
  Layout layout;
  ffi::DataType input_dtype;
  bool has_grad_spikes;
  bool has_grad_v_seq;
  bool has_grad_v_final;
};

// Backward: cotangents of (spikes, v_seq, v_final), each optional, x, the forward's checkpoints
// and v_init (optional, as in the forward) -> grad_x (x's dtype) and grad_v_init (state dtype;
// optional: absent when v_init is not differentiated).
inline ffi::Error check_backward(const ffi::AnyBuffer& grad_spikes,
                                 const ffi::AnyBuffer& grad_v_seq,
                                 const ffi::AnyBuffer& grad_v_final, const ffi::AnyBuffer& x,
                                 const ffi::AnyBuffer& checkpoints, const ffi::AnyBuffer& v_init,
                                 const ffi::AnyBuffer& grad_x, const ffi::AnyBuffer& grad_v_init,
                                 int64_t time_axis, int64_t checkpoint_steps, int64_t surrogate,
                                 BackwardCall* call) {
  if (!is_input_dtype(x.element_type())) {
    return ffi::Error::InvalidArgument("jaxqif: x must be float16, bfloat16, float32 or float64");
  }
  JAXQIF_RETURN_IF_ERROR(check_checkpoint_steps(x.element_type(), checkpoint_steps));
  if (surrogate < 0 || surrogate >= kNumSurrogates) {
    return ffi::Error::InvalidArgument("jaxqif: unknown surrogate id " + std::to_string(surrogate));
  }
  JAXQIF_RETURN_IF_ERROR(decode_layout(x.dimensions(), time_axis, &call->layout));
  const Layout& l = call->layout;
  const ffi::DataType in = x.element_type(), st = state_dtype_for(in);
  JAXQIF_RETURN_IF_ERROR(
      check_buffer("checkpoints", checkpoints, st, checkpoint_layout(l, in).elements(), false));
  JAXQIF_RETURN_IF_ERROR(check_buffer("grad_spikes", grad_spikes, in, l.elements(), true));
  JAXQIF_RETURN_IF_ERROR(check_buffer("grad_v_seq", grad_v_seq, st, l.elements(), true));
  JAXQIF_RETURN_IF_ERROR(check_buffer("grad_v_final", grad_v_final, st, l.neurons(), true));
  JAXQIF_RETURN_IF_ERROR(check_buffer("v_init", v_init, st, l.neurons(), true));
  JAXQIF_RETURN_IF_ERROR(check_buffer("grad_x", grad_x, in, l.elements(), false));
  JAXQIF_RETURN_IF_ERROR(check_buffer("grad_v_init", grad_v_init, st, l.neurons(), true));
  call->input_dtype = in;
  call->has_grad_spikes = grad_spikes.element_count() != 0;
  call->has_grad_v_seq = grad_v_seq.element_count() != 0;
  call->has_grad_v_final = grad_v_final.element_count() != 0;
  return ffi::Error::Success();
}

// Neuron attributes every handler takes (Python floats arrive as f64, ints as i64), appended to
// an ffi::Ffi::Bind() chain. v_init_value is every neuron's initial potential when the v_init
// buffer is absent (no array filled with it is read or written); checkpoint_steps must be
// checkpoint_interval's. The backward adds the surrogate and detach_reset.
#define JAXQIF_NEURON_ATTRS                                                           \
  .Attr<int64_t>("time_axis").Attr<double>("tau").Attr<double>("v_c")                \
      .Attr<double>("a0").Attr<double>("v_threshold").Attr<double>("v_rest")         \
      .Attr<double>("v_reset").Attr<bool>("hard_reset").Attr<double>("v_init_value") \
      .Attr<int64_t>("checkpoint_steps")
#define JAXQIF_BACKWARD_ATTRS \
  JAXQIF_NEURON_ATTRS.Attr<bool>("detach_reset").Attr<int64_t>("surrogate").Attr<double>("alpha")

}  // namespace jaxqif
