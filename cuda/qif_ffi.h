// What the CPU and CUDA handlers share: their binding (operands, results, and the attributes
// decoded into the neuron's settings), and the checks that turn a malformed call into an
// ffi::Error (a Python exception) before any memory is touched.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

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

// The input dtypes, in one list. Adding one: a line here, its DTypeTraits below, and its input
// type on each platform with the conversions to and from its state type (CpuDType in
// qif_cpu.cc, CudaDType in launch/cuda_dtypes.h and kernels/stream_io.cuh; see cuda/README.md).
#define JAXQIF_INPUT_DTYPES(X) X(F16) X(BF16) X(F32) X(F64)

// What an input dtype is on every platform: the state type S its neurons are computed in, the
// state's dtype, the bytes of an input element and the steps between checkpoints. A platform's
// traits (CpuDType, CudaDType) add its input type, Input.
template <ffi::DataType kInput, typename S>
struct InputDType {
  static constexpr ffi::DataType kDType = kInput;
  using State = S;
  static constexpr ffi::DataType kStateDType =
      sizeof(S) == 8 ? ffi::DataType::F64 : ffi::DataType::F32;
  static constexpr int kBytes = static_cast<int>(ffi::ByteWidth(kInput));
  static constexpr int kCheckpointInterval = checkpoint_interval(kBytes);
};

// float16, bfloat16 and float32 inputs keep their state in float32, float64 in float64.
template <ffi::DataType kDType>
struct DTypeTraits;
template <>
struct DTypeTraits<ffi::DataType::F16> : InputDType<ffi::DataType::F16, float> {};
template <>
struct DTypeTraits<ffi::DataType::BF16> : InputDType<ffi::DataType::BF16, float> {};
template <>
struct DTypeTraits<ffi::DataType::F32> : InputDType<ffi::DataType::F32, float> {};
template <>
struct DTypeTraits<ffi::DataType::F64> : InputDType<ffi::DataType::F64, double> {};

// A platform's traits of an input dtype: DTypeTraits and the platform's input type X.
template <ffi::DataType kDType, typename X>
struct PlatformDType : DTypeTraits<kDType> {
  using Input = X;
};

inline bool is_input_dtype(ffi::DataType t) {
  switch (t) {
#define JAXQIF_INPUT_DTYPE_CASE(D) case ffi::DataType::D:
    JAXQIF_INPUT_DTYPES(JAXQIF_INPUT_DTYPE_CASE)
#undef JAXQIF_INPUT_DTYPE_CASE
    return true;
    default: return false;
  }
}

// The state dtype of an input dtype (INVALID for another dtype, which the checks refuse first).
inline ffi::DataType state_dtype_for(ffi::DataType input) {
  switch (input) {
#define JAXQIF_STATE_DTYPE_CASE(D) \
  case ffi::DataType::D: return DTypeTraits<ffi::DataType::D>::kStateDType;
    JAXQIF_INPUT_DTYPES(JAXQIF_STATE_DTYPE_CASE)
#undef JAXQIF_STATE_DTYPE_CASE
    default: return ffi::DataType::INVALID;
  }
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
inline void* data_or_null(ffi::AnyBuffer& buffer) {
  return buffer.element_count() ? buffer.untyped_data() : nullptr;
}
inline const void* data_or_null(const ffi::AnyBuffer& buffer) {
  return buffer.element_count() ? buffer.untyped_data() : nullptr;
}

// Calls fn.template operator()<Platform<dtype>>() (the platform's traits of `dtype`: its Input
// type, State type, ...) and returns true; for a dtype not in the list returns false and calls
// nothing (the handlers refuse such dtypes first: false is an internal error).
template <template <ffi::DataType> class Platform, typename Fn>
bool dispatch_dtype(ffi::DataType dtype, Fn&& fn) {
  switch (dtype) {
#define JAXQIF_DTYPE_CASE(D)                                                           \
  case ffi::DataType::D: {                                                             \
    using Traits = Platform<ffi::DataType::D>;                                         \
    static_assert(sizeof(typename Traits::Input) == Traits::kBytes, "input type size"); \
    fn.template operator()<Traits>();                                                  \
    return true;                                                                       \
  }
    JAXQIF_INPUT_DTYPES(JAXQIF_DTYPE_CASE)
#undef JAXQIF_DTYPE_CASE
    default: return false;
  }
}

// What a handler returns when a value it has already checked names no kernel (a dtype, a
// surrogate): a bug of jaxqif's, never a malformed call.
inline ffi::Error no_kernel(const char* what, int64_t value) {
  return ffi::Error::Internal(std::string("jaxqif: internal error: no kernel for ") + what + " " +
                              std::to_string(value));
}

#define JAXQIF_RETURN_IF_ERROR(expr)      \
  do {                                    \
    ffi::Error _status = (expr);          \
    if (_status.failure()) return _status; \
  } while (0)

// A checked forward call: what either platform's forward needs. `params` has the parameters
// given as arrays (the v3 handlers'; none with v2).
struct ForwardCall {
  ForwardPointers ptr;
  Layout layout;
  ffi::DataType input_dtype;
  NeuronSettings settings;
  ParamArrays params;
};

// Forward: x [.., T, ..], v_init [neurons] (optional: absent, every neuron starts at the
// v_init_value attribute) -> spikes (x's dtype), v_final, v_seq and the checkpoints (each
// optional: absent, not written; state dtype).
inline ffi::Error check_forward(const ffi::AnyBuffer& x, const ffi::AnyBuffer& v_init,
                                ffi::AnyBuffer& spikes, ffi::AnyBuffer& v_final,
                                ffi::AnyBuffer& v_seq, ffi::AnyBuffer& checkpoints,
                                const NeuronSettings& settings, ForwardCall* call) {
  if (!is_input_dtype(x.element_type())) {
    return ffi::Error::InvalidArgument("jaxqif: x must be float16, bfloat16, float32 or float64");
  }
  JAXQIF_RETURN_IF_ERROR(check_checkpoint_steps(x.element_type(), settings.checkpoint_steps));
  JAXQIF_RETURN_IF_ERROR(decode_layout(x.dimensions(), settings.time_axis, &call->layout));
  const Layout& l = call->layout;
  const ffi::DataType in = x.element_type(), st = state_dtype_for(in);
  JAXQIF_RETURN_IF_ERROR(check_buffer("v_init", v_init, st, l.neurons(), true));
  JAXQIF_RETURN_IF_ERROR(check_buffer("spikes", spikes, in, l.elements(), false));
  JAXQIF_RETURN_IF_ERROR(check_buffer("v_final", v_final, st, l.neurons(), true));
  JAXQIF_RETURN_IF_ERROR(check_buffer("v_seq", v_seq, st, l.elements(), true));
  JAXQIF_RETURN_IF_ERROR(
      check_buffer("checkpoints", checkpoints, st, checkpoint_layout(l, in).elements(), true));
  call->ptr = {x.untyped_data(),     data_or_null(v_init), spikes.untyped_data(),
               data_or_null(v_final), data_or_null(v_seq),  data_or_null(checkpoints)};
  call->input_dtype = in;
  call->settings = settings;
  return ffi::Error::Success();
}

// A checked backward call; `param_grads`: the per-neuron gradients wanted of `params`.
struct BackwardCall {
  BackwardPointers ptr;
  Layout layout;
  ffi::DataType input_dtype;
  BackwardSettings settings;
  ParamArrays params;
  ParamGrads param_grads;
};

// The parameter operands of the v3 handlers, in ParamIndex order, and their gradients.
using ParamBuffers = const ffi::AnyBuffer* [kNumParams];
using ParamGradBuffers = ffi::AnyBuffer* [kNumParams];

inline constexpr const char* kParamNames[kNumParams] = {"tau",         "v_c",    "a0",
                                                        "v_threshold", "v_rest", "v_reset"};

// Each given parameter (absent: zero elements) in the state dtype, with a count that divides
// the neuron count (a compact array, jaxqif/_params.py); v_reset only with the hard reset.
inline ffi::Error check_params(const ParamBuffers& buffers, ffi::DataType st, const Layout& l,
                               bool hard_reset, ParamArrays* params) {
  for (int j = 0; j < kNumParams; ++j) {
    const ffi::AnyBuffer& b = *buffers[j];
    const int64_t count = static_cast<int64_t>(b.element_count());
    if (count == 0) continue;
    if (b.element_type() != st) {
      return ffi::Error::InvalidArgument(std::string("jaxqif: ") + kParamNames[j] +
                                         " has the wrong dtype");
    }
    if (l.neurons() % count != 0 || (j == kVReset && !hard_reset)) {
      return ffi::Error::InvalidArgument(
          std::string("jaxqif: ") + kParamNames[j] + " has " + std::to_string(count) +
          " elements, which do not tile the " + std::to_string(l.neurons()) + " neurons" +
          (j == kVReset && !hard_reset ? " (and the soft reset has no v_reset)" : ""));
    }
    params->values[j] = b.untyped_data();
    params->wraps[j] = IndexWrap(count);
  }
  return ffi::Error::Success();
}

// Each wanted gradient (absent: zero elements), of a parameter given as an array: all of the
// same count, the neuron count or a block of neurons that every parameter array tiles (its
// count a multiple of theirs, ParamGrads) and that tiles the layout's rows or is tiled by them
// (both trailing blocks of the neurons: the CPU kernel walks the block's copies row by row).
inline ffi::Error check_param_grads(const ParamGradBuffers& buffers, ffi::DataType st,
                                    const Layout& l, const ParamArrays& params,
                                    ParamGrads* grads) {
  for (int j = 0; j < kNumParams; ++j) {
    ffi::AnyBuffer& b = *buffers[j];
    const int64_t count = static_cast<int64_t>(b.element_count());
    if (count == 0) continue;
    const std::string name = std::string("grad_") + kParamNames[j];
    if (!params.values[j]) {
      return ffi::Error::InvalidArgument("jaxqif: " + name + " is asked for, but " +
                                         kParamNames[j] + " is not given as an array");
    }
    if (grads->count == 0) grads->count = count;
    bool tiled = count == grads->count && l.neurons() % count == 0 &&
                 (count % l.inner == 0 || l.inner % count == 0);
    for (int i = 0; i < kNumParams; ++i) {
      tiled &= !params.values[i] || count % params.wraps[i].count == 0;
    }
    if (!tiled) {
      return ffi::Error::InvalidArgument(
          "jaxqif: " + name + " has " + std::to_string(count) + " elements: not a trailing "
          "block of the " + std::to_string(l.neurons()) + " neurons that every parameter array "
          "tiles, or not the count of the other gradients");
    }
    JAXQIF_RETURN_IF_ERROR(check_buffer(name.c_str(), b, st, count, false));
    grads->values[j] = b.untyped_data();
  }
  return ffi::Error::Success();
}

// Backward: cotangents of (spikes, v_seq, v_final), each optional, x, the forward's checkpoints
// and v_init (optional, as in the forward) -> grad_x (x's dtype) and grad_v_init (state dtype;
// optional: absent when v_init is not differentiated).
inline ffi::Error check_backward(const ffi::AnyBuffer& grad_spikes,
                                 const ffi::AnyBuffer& grad_v_seq,
                                 const ffi::AnyBuffer& grad_v_final, const ffi::AnyBuffer& x,
                                 const ffi::AnyBuffer& checkpoints, const ffi::AnyBuffer& v_init,
                                 ffi::AnyBuffer& grad_x, ffi::AnyBuffer& grad_v_init,
                                 const BackwardSettings& settings, BackwardCall* call) {
  if (!is_input_dtype(x.element_type())) {
    return ffi::Error::InvalidArgument("jaxqif: x must be float16, bfloat16, float32 or float64");
  }
  JAXQIF_RETURN_IF_ERROR(
      check_checkpoint_steps(x.element_type(), settings.neuron.checkpoint_steps));
  if (settings.surrogate < 0 || settings.surrogate >= kNumSurrogates) {
    return ffi::Error::InvalidArgument("jaxqif: unknown surrogate id " +
                                       std::to_string(settings.surrogate));
  }
  JAXQIF_RETURN_IF_ERROR(decode_layout(x.dimensions(), settings.neuron.time_axis, &call->layout));
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
  call->ptr = {data_or_null(grad_spikes),  data_or_null(grad_v_seq),
               data_or_null(grad_v_final), x.untyped_data(),
               data_or_null(checkpoints),  data_or_null(v_init),
               grad_x.untyped_data(),      data_or_null(grad_v_init)};
  call->input_dtype = in;
  call->settings = settings;
  return ffi::Error::Success();
}

// The handlers' binding, shared by the platforms: the operands, results and attributes that
// jaxqif/primitives.py lowers to, appended to `binding` (ffi::Ffi::Bind(), with the platform's
// context first, if any). An absent optional buffer has zero elements. The attributes are
// decoded into the settings struct by name (XLA_FFI_REGISTER_STRUCT_ATTR_DECODING below): exactly
// those of JAXQIF_NEURON_SETTINGS (and JAXQIF_BACKWARD_SETTINGS), each of its type. Built from
// the groups of buffers below, in the order of the handlers' parameters (a Binding is moved
// only as a temporary: its move constructor is private).
template <typename Binding>
auto forward_operands(Binding&& binding) {
  return std::forward<Binding>(binding)
      .template Arg<ffi::AnyBuffer>()   // x
      .template Arg<ffi::AnyBuffer>();  // v_init
}

template <typename Binding>
auto forward_results(Binding&& binding) {
  return std::forward<Binding>(binding)
      .template Ret<ffi::AnyBuffer>()   // spikes
      .template Ret<ffi::AnyBuffer>()   // v_final
      .template Ret<ffi::AnyBuffer>()   // v_seq
      .template Ret<ffi::AnyBuffer>();  // checkpoints
}

template <typename Binding>
auto backward_operands(Binding&& binding) {
  return std::forward<Binding>(binding)
      .template Arg<ffi::AnyBuffer>()   // grad_spikes
      .template Arg<ffi::AnyBuffer>()   // grad_v_seq
      .template Arg<ffi::AnyBuffer>()   // grad_v_final
      .template Arg<ffi::AnyBuffer>()   // x
      .template Arg<ffi::AnyBuffer>()   // checkpoints
      .template Arg<ffi::AnyBuffer>();  // v_init
}

template <typename Binding>
auto backward_results(Binding&& binding) {
  return std::forward<Binding>(binding)
      .template Ret<ffi::AnyBuffer>()   // grad_x
      .template Ret<ffi::AnyBuffer>();  // grad_v_init
}

// The v3 interface's additions: the six parameters as operands (absent: zero elements, the
// attribute's number), and in the backward their per-neuron gradients as results (absent: not
// wanted), in ParamIndex order.
template <typename Binding>
auto param_operands(Binding&& binding) {
  return std::forward<Binding>(binding)
      .template Arg<ffi::AnyBuffer>()   // tau
      .template Arg<ffi::AnyBuffer>()   // v_c
      .template Arg<ffi::AnyBuffer>()   // a0
      .template Arg<ffi::AnyBuffer>()   // v_threshold
      .template Arg<ffi::AnyBuffer>()   // v_rest
      .template Arg<ffi::AnyBuffer>();  // v_reset
}

template <typename Binding>
auto param_gradient_results(Binding&& binding) {
  return std::forward<Binding>(binding)
      .template Ret<ffi::AnyBuffer>()   // grad_tau
      .template Ret<ffi::AnyBuffer>()   // grad_v_c
      .template Ret<ffi::AnyBuffer>()   // grad_a0
      .template Ret<ffi::AnyBuffer>()   // grad_v_threshold
      .template Ret<ffi::AnyBuffer>()   // grad_v_rest
      .template Ret<ffi::AnyBuffer>();  // grad_v_reset
}

template <typename Binding>
auto bind_forward(Binding&& binding) {
  return forward_results(forward_operands(std::forward<Binding>(binding)))
      .template Attrs<NeuronSettings>();
}

template <typename Binding>
auto bind_backward(Binding&& binding) {
  return backward_results(backward_operands(std::forward<Binding>(binding)))
      .template Attrs<BackwardSettings>();
}

// v3: the parameters after v_init, their gradients after grad_v_init.
template <typename Binding>
auto bind_forward_v3(Binding&& binding) {
  return forward_results(param_operands(forward_operands(std::forward<Binding>(binding))))
      .template Attrs<NeuronSettings>();
}

template <typename Binding>
auto bind_backward_v3(Binding&& binding) {
  return param_gradient_results(
             backward_results(param_operands(backward_operands(std::forward<Binding>(binding)))))
      .template Attrs<BackwardSettings>();
}

// A platform's handlers, for the bindings above with one Ctx per Context: they check the call
// and hand it to kRun(context..., call), unless it has no element.
template <auto kRun, typename... Context>
struct ForwardHandler {
  ffi::Error operator()(Context... context, ffi::AnyBuffer x, ffi::AnyBuffer v_init,
                        ffi::Result<ffi::AnyBuffer> spikes, ffi::Result<ffi::AnyBuffer> v_final,
                        ffi::Result<ffi::AnyBuffer> v_seq,
                        ffi::Result<ffi::AnyBuffer> checkpoints,
                        const NeuronSettings& settings) const {
    ForwardCall call;
    JAXQIF_RETURN_IF_ERROR(
        check_forward(x, v_init, *spikes, *v_final, *v_seq, *checkpoints, settings, &call));
    if (call.layout.elements() == 0) return ffi::Error::Success();
    return kRun(context..., call);
  }
};

template <auto kRun, typename... Context>
struct ForwardHandlerV3 {
  ffi::Error operator()(Context... context, ffi::AnyBuffer x, ffi::AnyBuffer v_init,
                        ffi::AnyBuffer tau, ffi::AnyBuffer v_c, ffi::AnyBuffer a0,
                        ffi::AnyBuffer v_threshold, ffi::AnyBuffer v_rest,
                        ffi::AnyBuffer v_reset, ffi::Result<ffi::AnyBuffer> spikes,
                        ffi::Result<ffi::AnyBuffer> v_final, ffi::Result<ffi::AnyBuffer> v_seq,
                        ffi::Result<ffi::AnyBuffer> checkpoints,
                        const NeuronSettings& settings) const {
    ForwardCall call;
    JAXQIF_RETURN_IF_ERROR(
        check_forward(x, v_init, *spikes, *v_final, *v_seq, *checkpoints, settings, &call));
    const ParamBuffers params = {&tau, &v_c, &a0, &v_threshold, &v_rest, &v_reset};
    JAXQIF_RETURN_IF_ERROR(check_params(params, state_dtype_for(call.input_dtype), call.layout,
                                        settings.hard_reset, &call.params));
    if (call.layout.elements() == 0) return ffi::Error::Success();
    return kRun(context..., call);
  }
};

template <auto kRun, typename... Context>
struct BackwardHandler {
  ffi::Error operator()(Context... context, ffi::AnyBuffer grad_spikes, ffi::AnyBuffer grad_v_seq,
                        ffi::AnyBuffer grad_v_final, ffi::AnyBuffer x,
                        ffi::AnyBuffer checkpoints, ffi::AnyBuffer v_init,
                        ffi::Result<ffi::AnyBuffer> grad_x,
                        ffi::Result<ffi::AnyBuffer> grad_v_init,
                        const BackwardSettings& settings) const {
    BackwardCall call;
    JAXQIF_RETURN_IF_ERROR(check_backward(grad_spikes, grad_v_seq, grad_v_final, x, checkpoints,
                                          v_init, *grad_x, *grad_v_init, settings, &call));
    if (call.layout.elements() == 0) return ffi::Error::Success();
    return kRun(context..., call);
  }
};

template <auto kRun, typename... Context>
struct BackwardHandlerV3 {
  ffi::Error operator()(Context... context, ffi::AnyBuffer grad_spikes, ffi::AnyBuffer grad_v_seq,
                        ffi::AnyBuffer grad_v_final, ffi::AnyBuffer x,
                        ffi::AnyBuffer checkpoints, ffi::AnyBuffer v_init, ffi::AnyBuffer tau,
                        ffi::AnyBuffer v_c, ffi::AnyBuffer a0, ffi::AnyBuffer v_threshold,
                        ffi::AnyBuffer v_rest, ffi::AnyBuffer v_reset,
                        ffi::Result<ffi::AnyBuffer> grad_x,
                        ffi::Result<ffi::AnyBuffer> grad_v_init,
                        ffi::Result<ffi::AnyBuffer> grad_tau, ffi::Result<ffi::AnyBuffer> grad_v_c,
                        ffi::Result<ffi::AnyBuffer> grad_a0,
                        ffi::Result<ffi::AnyBuffer> grad_v_threshold,
                        ffi::Result<ffi::AnyBuffer> grad_v_rest,
                        ffi::Result<ffi::AnyBuffer> grad_v_reset,
                        const BackwardSettings& settings) const {
    BackwardCall call;
    JAXQIF_RETURN_IF_ERROR(check_backward(grad_spikes, grad_v_seq, grad_v_final, x, checkpoints,
                                          v_init, *grad_x, *grad_v_init, settings, &call));
    const ffi::DataType st = state_dtype_for(call.input_dtype);
    const ParamBuffers params = {&tau, &v_c, &a0, &v_threshold, &v_rest, &v_reset};
    JAXQIF_RETURN_IF_ERROR(
        check_params(params, st, call.layout, settings.neuron.hard_reset, &call.params));
    const ParamGradBuffers grads = {&*grad_tau,         &*grad_v_c,    &*grad_a0,
                                    &*grad_v_threshold, &*grad_v_rest, &*grad_v_reset};
    JAXQIF_RETURN_IF_ERROR(
        check_param_grads(grads, st, call.layout, call.params, &call.param_grads));
    if (call.layout.elements() == 0) return ffi::Error::Success();
    return kRun(context..., call);
  }
};

}  // namespace jaxqif

// The settings' decoding: NeuronSettings from the forward's attributes, BackwardSettings from
// the backward's, member by member in the order of their X-macros (so that the aggregate
// initialization FFI does, T{member...}, fills each field from its own attribute).
#define JAXQIF_SETTINGS_MEMBER(TYPE, NAME) , ::xla::ffi::StructMember<TYPE>(#NAME)
#define JAXQIF_DROP_FIRST(first, ...) __VA_ARGS__
#define JAXQIF_APPLY(macro, ...) macro(__VA_ARGS__)  // expands the list before `macro` splits it
XLA_FFI_REGISTER_STRUCT_ATTR_DECODING(
    jaxqif::NeuronSettings,
    JAXQIF_APPLY(JAXQIF_DROP_FIRST, JAXQIF_NEURON_SETTINGS(JAXQIF_SETTINGS_MEMBER)));
XLA_FFI_REGISTER_STRUCT_ATTR_DECODING(
    jaxqif::BackwardSettings,
    JAXQIF_APPLY(JAXQIF_DROP_FIRST, JAXQIF_NEURON_SETTINGS(JAXQIF_SETTINGS_MEMBER)
                                        JAXQIF_BACKWARD_SETTINGS(JAXQIF_SETTINGS_MEMBER)));
#undef JAXQIF_APPLY
#undef JAXQIF_DROP_FIRST
#undef JAXQIF_SETTINGS_MEMBER
