// CPU twin of the CUDA kernels: the same formulas (qif_math.h), one neuron row at a time.
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <vector>

#include "qif_ffi.h"
#include "qif_math.h"
#include "static_switch.h"
#include "xla/ffi/api/ffi.h"

namespace jaxqif {
namespace {

// float16 and bfloat16 travel as raw 16-bit patterns on the CPU; the state is float32.
struct Half { uint16_t bits; };
struct BFloat16 { uint16_t bits; };

inline float bits_to_float(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
inline uint32_t float_to_bits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return bits;
}

inline float to_state(float v) { return v; }
inline double to_state(double v) { return v; }
inline float to_state(BFloat16 v) { return bits_to_float(static_cast<uint32_t>(v.bits) << 16); }
inline float to_state(Half v) {
  const uint32_t sign = static_cast<uint32_t>(v.bits & 0x8000u) << 16;
  const uint32_t exponent = (v.bits >> 10) & 0x1fu;
  const uint32_t mantissa = v.bits & 0x3ffu;
  if (exponent == 0x1f) return bits_to_float(sign | 0x7f800000u | (mantissa << 13));  // inf, nan
  if (exponent != 0) return bits_to_float(sign | ((exponent + 112) << 23) | (mantissa << 13));
  // zero or subnormal: mantissa * 2^-24, exact in float
  const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
  return sign ? -magnitude : magnitude;
}

// Rounding to nearest even, as XLA's converts do.
template <typename X, typename S>
X from_state(S v);
template <>
inline float from_state<float, float>(float v) { return v; }
template <>
inline double from_state<double, double>(double v) { return v; }
template <>
inline BFloat16 from_state<BFloat16, float>(float v) {
  const uint32_t bits = float_to_bits(v);
  if ((bits & 0x7fffffffu) > 0x7f800000u) {  // NaN: keep it a (quiet) NaN
    return BFloat16{static_cast<uint16_t>((bits >> 16) | 0x40)};
  }
  const uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return BFloat16{static_cast<uint16_t>((bits + rounding) >> 16)};
}
template <>
inline Half from_state<Half, float>(float v) {
  const uint32_t bits = float_to_bits(v);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t abs = bits & 0x7fffffffu;
  if (abs > 0x7f800000u) return Half{static_cast<uint16_t>(sign | 0x7e00u)};  // nan
  if (abs >= 0x477ff000u) return Half{static_cast<uint16_t>(sign | 0x7c00u)};  // rounds to inf
  if (abs >= 0x38800000u) {  // normal half: rebias the exponent, round the 13 dropped bits
    const uint32_t rebiased = abs - 0x38000000u;
    const uint32_t rounding = 0xfffu + ((rebiased >> 13) & 1u);
    return Half{static_cast<uint16_t>(sign | ((rebiased + rounding) >> 13))};
  }
  // subnormal half (or zero): value / 2^-24, rounded to nearest even by float arithmetic
  const float scaled = bits_to_float(abs) * 16777216.0f;  // exact: a power-of-two scaling
  const float rounded = scaled + 12582912.0f - 12582912.0f;  // 1.5 * 2^23 forces integer rounding
  return Half{static_cast<uint16_t>(sign | static_cast<uint16_t>(rounded))};
}


// v_init: nullptr means every neuron starts at v_init_value; v_final, v_seq, checkpoints:
// nullptr means not written.
template <typename X, typename S, bool kHardReset>
[[gnu::always_inline]] inline void forward_rows_body(const X* x, const S* v_init, S v_init_value,
                                                     X* spikes, S* v_final, S* v_seq,
                                                     S* checkpoints, const Layout& l,
                                                     const QifParams<S>& p) {
  std::vector<S> scratch(v_final ? 0 : l.inner);
  constexpr int64_t kC = checkpoint_interval(sizeof(X));
  const int64_t saved = checkpoint_count(l.steps, kC);
  for (int64_t o = 0; o < l.outer; ++o) {
    S* v = v_final ? v_final + o * l.inner : scratch.data();  // this row's running state
    for (int64_t i = 0; i < l.inner; ++i) v[i] = v_init ? v_init[o * l.inner + i] : v_init_value;
    for (int64_t t = 0; t < l.steps; ++t) {
      const int64_t row = (o * l.steps + t) * l.inner;
      for (int64_t i = 0; i < l.inner; ++i) {
        const S h = qif_charge(v[i], to_state(x[row + i]), p);
        const bool spike = qif_fires(h, p);
        spikes[row + i] = from_state<X>(spike ? S(1) : S(0));
        v[i] = qif_reset<kHardReset>(h, spike, p);
        if (v_seq) v_seq[row + i] = v[i];
      }
      if (checkpoints && (t + 1) % kC == 0 && t + 1 < l.steps) {
        std::copy(v, v + l.inner, checkpoints + (o * saved + (t + 1) / kC - 1) * l.inner);
      }
    }
  }
}

// The charge's std::fma is one instruction where the CPU has FMA, a call into libm otherwise,
// which also keeps the loops over neurons from being vectorized (3x slower on x86-64). So on
// x86-64 each row loop (an always-inlined kBody) is compiled twice, for the baseline ISA and for
// AVX2 + FMA, and run_rows picks one at run time; both round identically (one rounding per fma,
// no other contraction).
#if defined(__x86_64__) && defined(__GNUC__)
template <auto kBody, typename... Args>
[[gnu::target("avx2,fma")]] void run_rows_fma(Args... args) {
  kBody(args...);
}

inline bool cpu_has_fma() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}
#endif

template <auto kBody, typename... Args>
void run_rows(Args... args) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (cpu_has_fma()) return run_rows_fma<kBody>(args...);
#endif
  kBody(args...);
}

// BPTT one row at a time, an interval of checkpoint_interval steps at a time from the last: each
// interval's H is recomputed from its checkpoint (v_init for the first) and x, then walked down.
// v_init as in forward_rows_body; grad_v_init may be nullptr (not wanted).
template <SurrogateKind kKind, bool kHardReset, typename X, typename S>
[[gnu::always_inline]] inline void backward_rows_body(const X* grad_spikes, const S* grad_v_seq,
                                                      const S* grad_v_final, const X* x,
                                                      const S* checkpoints, const S* v_init,
                                                      S v_init_value, X* grad_x, S* grad_v_init,
                                                      const Layout& l, const QifParams<S>& p) {
  constexpr int64_t kC = checkpoint_interval(sizeof(X));
  const int64_t saved = checkpoint_count(l.steps, kC);
  std::vector<S> carry(l.inner);  // dL/dV[t] flowing back along one row; ends as dL/dv_init
  std::vector<S> entry(l.inner);  // V entering the interval
  std::vector<S> h(kC * l.inner);  // the interval's H, step-major
  for (int64_t o = 0; o < l.outer; ++o) {
    for (int64_t i = 0; i < l.inner; ++i) {
      carry[i] = grad_v_final ? grad_v_final[o * l.inner + i] : S(0);
    }
    for (int64_t k = saved; k >= 0; --k) {
      const int64_t t0 = k * kC, len = std::min(kC, l.steps - t0);
      for (int64_t i = 0; i < l.inner; ++i) {
        entry[i] = k > 0     ? checkpoints[(o * saved + k - 1) * l.inner + i]
                   : v_init ? v_init[o * l.inner + i]
                            : v_init_value;
      }
      for (int64_t u = 0; u < len; ++u) {
        const X* x_row = x + (o * l.steps + t0 + u) * l.inner;
        for (int64_t i = 0; i < l.inner; ++i) {
          const S v = u > 0 ? qif_state_after<kHardReset>(h[(u - 1) * l.inner + i], p) : entry[i];
          h[u * l.inner + i] = qif_charge(v, to_state(x_row[i]), p);
        }
      }
      for (int64_t u = len - 1; u >= 0; --u) {
        const int64_t row = (o * l.steps + t0 + u) * l.inner;
        for (int64_t i = 0; i < l.inner; ++i) {
          const S v_prev =
              u > 0 ? qif_state_after<kHardReset>(h[(u - 1) * l.inner + i], p) : entry[i];
          const S g_spike = grad_spikes ? S(to_state(grad_spikes[row + i])) : S(0);
          const S g_v = grad_v_seq ? grad_v_seq[row + i] : S(0);
          const S grad_h = qif_backward_step<kKind, kHardReset>(h[u * l.inner + i], v_prev,
                                                                g_spike, g_v, carry[i], p);
          grad_x[row + i] = from_state<X>(grad_h * p.inv_tau);
        }
      }
    }
    if (grad_v_init) std::copy(carry.begin(), carry.end(), grad_v_init + o * l.inner);
  }
}

// The CPU side of the input dtypes (DTypeTraits, qif_ffi.h): each one's input type, whose
// conversions to and from the state type are to_state / from_state above.
template <ffi::DataType kDType>
struct CpuDType;
template <>
struct CpuDType<ffi::DataType::F16> : PlatformDType<ffi::DataType::F16, Half> {};
template <>
struct CpuDType<ffi::DataType::BF16> : PlatformDType<ffi::DataType::BF16, BFloat16> {};
template <>
struct CpuDType<ffi::DataType::F32> : PlatformDType<ffi::DataType::F32, float> {};
template <>
struct CpuDType<ffi::DataType::F64> : PlatformDType<ffi::DataType::F64, double> {};

ffi::Error cpu_forward(const ForwardCall& call) {
  const ForwardPointers& ptr = call.ptr;
  const NeuronSettings& s = call.settings;
  const bool known_dtype = dispatch_dtype<CpuDType>(call.input_dtype, [&]<typename D>() {
    using X = typename D::Input;
    using S = typename D::State;
    const QifParams<S> p(s);
    bool_switch([&]<bool kHardReset>() {
      run_rows<forward_rows_body<X, S, kHardReset>>(
          static_cast<const X*>(ptr.x), static_cast<const S*>(ptr.v_init),
          static_cast<S>(s.v_init_value), static_cast<X*>(ptr.spikes),
          static_cast<S*>(ptr.v_final), static_cast<S*>(ptr.v_seq),
          static_cast<S*>(ptr.checkpoints), call.layout, p);
    }, s.hard_reset);
  });
  if (!known_dtype) return no_kernel("dtype", static_cast<int64_t>(call.input_dtype));
  return ffi::Error::Success();
}

ffi::Error cpu_backward(const BackwardCall& call) {
  const BackwardPointers& ptr = call.ptr;
  const BackwardSettings& s = call.settings;
  bool known_surrogate = false;
  const bool known_dtype = dispatch_dtype<CpuDType>(call.input_dtype, [&]<typename D>() {
    using X = typename D::Input;
    using S = typename D::State;
    known_surrogate = dispatch_surrogate_reset(
        s.surrogate, s.neuron.hard_reset, [&]<SurrogateKind kKind, bool kHardReset>() {
          const auto p = QifParams<S>::template backward<kKind>(s);
          run_rows<backward_rows_body<kKind, kHardReset, X, S>>(
              static_cast<const X*>(ptr.grad_spikes), static_cast<const S*>(ptr.grad_v_seq),
              static_cast<const S*>(ptr.grad_v_final), static_cast<const X*>(ptr.x),
              static_cast<const S*>(ptr.checkpoints), static_cast<const S*>(ptr.v_init),
              static_cast<S>(s.neuron.v_init_value), static_cast<X*>(ptr.grad_x),
              static_cast<S*>(ptr.grad_v_init), call.layout, p);
        });
  });
  if (!known_dtype) return no_kernel("dtype", static_cast<int64_t>(call.input_dtype));
  if (!known_surrogate) return no_kernel("surrogate", s.surrogate);
  return ffi::Error::Success();
}

}  // namespace
}  // namespace jaxqif

namespace ffi = xla::ffi;

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxqifForwardCpu, jaxqif::ForwardHandler<jaxqif::cpu_forward>{},
                              jaxqif::bind_forward(ffi::Ffi::Bind()));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxqifBackwardCpu, jaxqif::BackwardHandler<jaxqif::cpu_backward>{},
                              jaxqif::bind_backward(ffi::Ffi::Bind()));
