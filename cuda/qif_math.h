// Step, reset and surrogate math of the QIF neuron: the one source of these formulas for the CPU
// and CUDA handlers. Everything here is computed in the state type S (float for float16, bfloat16
// and float32 inputs; double for float64), one neuron at a time.
#pragma once

#include "std_headers.h"
#if !defined(__CUDACC_RTC__)  // the host's std::fma and std::memcpy (NVRTC compiles no host code)
#include <cmath>
#include <cstring>
#endif

#include "qif_buffers.h"
#include "surrogates.h"

#if defined(__CUDACC__)
#define QIF_HD __host__ __device__ __forceinline__
#elif defined(__GNUC__)
// Always inlined, so that the CPU forward compiled for FMA hardware (qif_cpu.cc) gets qif_fma
// as one instruction rather than a call.
#define QIF_HD inline __attribute__((always_inline))
#else
#define QIF_HD inline
#endif

namespace jaxqif {

// Under differentiation the forward saves no per-step residual, only checkpoints: the potential
// entering each interval [k C, k C + C) of C steps but the first (which starts from v_init),
// V[k C - 1] for k = 1 .. ceil(T / C) - 1, laid out like x with that many steps. The backward
// recomputes each interval's H from its checkpoint and x, so the two kernels together move x
// twice but no H: 21 bytes per float32 element instead of 24, 12 per 16-bit one instead of 16.
// C is 8 steps, 4 for 16-bit inputs (whose backward holds twice the neurons per thread in the
// same registers). jaxqif/primitives.py mirrors the rule and passes C as the checkpoint_steps
// attribute, which the handlers check.
QIF_HD constexpr int checkpoint_interval(int input_bytes) { return input_bytes == 2 ? 4 : 8; }

QIF_HD constexpr int64_t checkpoint_count(int64_t steps, int interval) {
  return steps > 0 ? (steps - 1) / interval : 0;
}

// Constants of one surrogate, sigma'(x) with x = H - v_threshold, folded in double so that each
// costs the backward a multiply or two: u = scale x is the surrogate's argument (x, alpha x or
// -alpha log2(e) x, by kind), gain its amplitude, coef one more factor. x is formed first, not
// folded into u = scale H + shift: near the threshold H - v_threshold is exact, while the fold
// would add an error of about |scale v_threshold| ulp, growing with the threshold.
struct SurrogateConstants {
  double scale, gain, coef;
};

// Each surrogate's folded constants and its gradient, one specialization per entry of
// JAXQIF_SURROGATES (below, after the math they use):
//   static SurrogateConstants constants(double alpha);  // host, in double
//   template <typename S> static S grad(S u, const QifParams<S>& p);  // sigma', u = scale x
template <SurrogateKind kKind>
struct SurrogateTraits;

// The neuron's settings as the handlers receive them, one XLA FFI attribute each, X(type, name)
// (jaxqif/primitives.py's _neuron_attrs: Python floats arrive as f64, ints as i64). The handlers
// decode the attributes by these names into NeuronSettings (the forward) or BackwardSettings
// (qif_ffi.h); the kernels get them as QifParams.
#define JAXQIF_NEURON_SETTINGS(X)                                                         \
  X(int64_t, time_axis)                                                                   \
  X(double, tau)                                                                          \
  X(double, v_c)                                                                          \
  X(double, a0)                                                                           \
  X(double, v_threshold)                                                                  \
  X(double, v_rest)                                                                       \
  X(double, v_reset) /* hard reset only */                                                \
  X(bool, hard_reset)                                                                     \
  X(double, v_init_value) /* every neuron's initial potential when v_init is absent */    \
  X(int64_t, checkpoint_steps) /* must be checkpoint_interval's, which the handlers check */
// The backward's, after the neuron's: detach_reset, the surrogate (its SurrogateKind) and its
// alpha.
#define JAXQIF_BACKWARD_SETTINGS(X) \
  X(bool, detach_reset)             \
  X(int64_t, surrogate)             \
  X(double, alpha)

#define JAXQIF_SETTINGS_FIELD(TYPE, NAME) TYPE NAME;
struct NeuronSettings {
  JAXQIF_NEURON_SETTINGS(JAXQIF_SETTINGS_FIELD)
};
struct BackwardSettings {
  NeuronSettings neuron;
  JAXQIF_BACKWARD_SETTINGS(JAXQIF_SETTINGS_FIELD)
};
#undef JAXQIF_SETTINGS_FIELD

// One neuron's parameters in the state type, where some are given as arrays (ParamArrays).
// n % w.count for n >= 0 (IndexWrap, qif_buffers.h).
QIF_HD int64_t wrap_index(int64_t n, const IndexWrap& w) {
  if (n >= IndexWrap::kFastLimit || w.count >= IndexWrap::kFastLimit) return n % w.count;
  const uint32_t n32 = static_cast<uint32_t>(n);
#if defined(__CUDA_ARCH__)
  const uint32_t high = __umulhi(n32, w.multiplier);
#else
  const uint32_t high = static_cast<uint32_t>((uint64_t(n32) * w.multiplier) >> 32);
#endif
  const uint32_t quotient = (high + n32) >> w.shift;  // (no overflow: both terms below 2^31)
  return n - static_cast<int64_t>(quotient) * w.count;
}

template <typename S>
struct NeuronValues {
  S tau, v_c, a0, v_threshold, v_rest, v_reset;  // v_reset: 0 for the soft reset

  // The settings' numbers (what every neuron has where no array is given).
  static NeuronValues numbers(const NeuronSettings& s) {
    return {static_cast<S>(s.tau),         static_cast<S>(s.v_c),    static_cast<S>(s.a0),
            static_cast<S>(s.v_threshold), static_cast<S>(s.v_rest),
            static_cast<S>(s.hard_reset ? s.v_reset : 0.0)};
  }

  // Neuron n's: each parameter from its array where given (at n % its count), else the number.
  QIF_HD static NeuronValues of(int64_t n, const ParamArrays& a, const NeuronValues& numbers) {
    auto value = [&](int j, S number) {
      return a.values[j] ? static_cast<const S*>(a.values[j])[wrap_index(n, a.wraps[j])]
                         : number;
    };
    return {value(kTau, numbers.tau),           value(kVC, numbers.v_c),
            value(kA0, numbers.a0),             value(kVThreshold, numbers.v_threshold),
            value(kVRest, numbers.v_rest),      value(kVReset, numbers.v_reset)};
  }
};

// Neuron parameters, already converted to the state type. With numbers only, the derived
// constants are computed in double and rounded once; a neuron whose parameters come from arrays
// has them folded in the state type (the per-neuron constructor), in the operations of
// jaxqif/_config.py's fold, so that every backend folds alike.
template <typename S>
struct QifParams {
  S inv_tau;  // 1 / tau
  // The charge as a polynomial in V[t-1] (qif_charge): H = (charge_v2 V + charge_v1) V +
  // (X inv_tau + charge_v0), with charge_v2 = a0 / tau, charge_v1 = 1 - a0 (v_rest + v_c) / tau
  // and charge_v0 = a0 v_rest v_c / tau.
  S charge_v2, charge_v1, charge_v0;
  S v_threshold;
  S v_reset;  // hard reset only
  // Backward only: dH[t]/dV[t-1] = dh_dv_slope V[t-1] + charge_v1 (dh_dv_slope = 2 a0 / tau),
  // and the surrogate's constants (SurrogateTraits<kKind>::constants).
  S dh_dv_slope;
  S sg_scale, sg_gain, sg_coef;
  bool detach_reset;

  // The forward's: the neuron alone (no surrogate, whose constants are left 0).
  explicit QifParams(const NeuronSettings& s) : QifParams(s, SurrogateConstants{}, false) {}
  // The backward's, for surrogate kKind (the one s.surrogate names: the handlers dispatch on
  // it). The surrogate, alpha and detach_reset matter to the backward only.
  template <SurrogateKind kKind>
  static QifParams backward(const BackwardSettings& s) {
    return QifParams(s.neuron, SurrogateTraits<kKind>::constants(s.alpha), s.detach_reset);
  }
  // One neuron's, where its parameters come from arrays: the charge constants folded in S; the
  // surrogate's constants and detach_reset are the call's (`shared`).
  QIF_HD QifParams(const NeuronValues<S>& v, const QifParams& shared)
      : inv_tau(S(1) / v.tau),
        charge_v2(v.a0 / v.tau),
        charge_v1(S(1) - v.a0 * (v.v_rest + v.v_c) / v.tau),
        charge_v0(v.a0 * v.v_rest * v.v_c / v.tau),
        v_threshold(v.v_threshold),
        v_reset(v.v_reset),
        dh_dv_slope(S(2) * (v.a0 / v.tau)),  // 2 charge_v2 exactly, as 2 a0 / tau rounded is
        sg_scale(shared.sg_scale),
        sg_gain(shared.sg_gain),
        sg_coef(shared.sg_coef),
        detach_reset(shared.detach_reset) {}
  // Constants already folded (by the constructor above, for a block of neurons at once), and
  // the call's surrogate constants and detach_reset.
  QIF_HD QifParams(S inv_tau, S charge_v2, S charge_v1, S charge_v0, S v_threshold, S v_reset,
                   S dh_dv_slope, const QifParams& shared)
      : inv_tau(inv_tau),
        charge_v2(charge_v2),
        charge_v1(charge_v1),
        charge_v0(charge_v0),
        v_threshold(v_threshold),
        v_reset(v_reset),
        dh_dv_slope(dh_dv_slope),
        sg_scale(shared.sg_scale),
        sg_gain(shared.sg_gain),
        sg_coef(shared.sg_coef),
        detach_reset(shared.detach_reset) {}

 private:
  QifParams(const NeuronSettings& s, const SurrogateConstants& sg, bool detach)
      : inv_tau(static_cast<S>(1.0 / s.tau)),
        charge_v2(static_cast<S>(s.a0 / s.tau)),
        charge_v1(static_cast<S>(1.0 - s.a0 * (s.v_rest + s.v_c) / s.tau)),
        charge_v0(static_cast<S>(s.a0 * s.v_rest * s.v_c / s.tau)),
        v_threshold(static_cast<S>(s.v_threshold)),
        v_reset(static_cast<S>(s.v_reset)),
        dh_dv_slope(static_cast<S>(2.0 * s.a0 / s.tau)),
        sg_scale(static_cast<S>(sg.scale)),
        sg_gain(static_cast<S>(sg.gain)),
        sg_coef(static_cast<S>(sg.coef)),
        detach_reset(detach) {}
};

// a b + c rounded once: the CUDA intrinsic on the GPU, std::fma (correctly rounded too) on the
// CPU, so the two handlers agree bit for bit.
QIF_HD float qif_fma(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}
QIF_HD double qif_fma(double a, double b, double c) {
#if defined(__CUDA_ARCH__)
  return __fma_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

// 2^x and division inside the surrogates. On the GPU, float uses the hardware's approximate
// exp2 and reciprocal (a few ulp; the correctly rounded versions take several instructions
// more, and the time-parallel backward is bound by instruction issue). On the CPU, 2^x is a
// polynomial (qif_exp2_cpu) rather than libm's exp2, whose calls would keep the backward's loops
// over neurons from vectorizing. Only the backward evaluates them, and its gradients are
// compared at a tolerance, never bit for bit.
//
// qif_exp2_cpu: x = n + f with n an integer and |f| <= 1/2; 2^f by a polynomial in f
// (Exp2Polynomial), 2^n by writing the exponent bits. x is first clamped to the normal exponents,
// so 2^x saturates at 2^min and 2^max (never 0 or inf: the surrogates, which only take
// 1 / (1 + 2^x) or 2^-|x|, come out within a denormal of what 0 and inf give); NaN stays NaN.
//
// The coefficients c_k of 2^f = sum c_k f^k, |f| <= 1/2. float: a minimax polynomial of degree 6
// (fitted to the relative error by Lawson's iteration: 2.1e-9, under an ulp evaluated in float;
// benchmarks/NOTES.md, "CPU: a cheaper 2^x for the Sigmoid"); double: the Taylor series of
// e^(f ln 2), (ln 2)^k / k!, to degree 13, whose remainder is below half an ulp.
template <typename S>
struct Exp2Polynomial;
template <>
struct Exp2Polynomial<float> {
  static constexpr int kDegree = 6;
  static constexpr float kCoefficients[kDegree + 1] = {
      1.0f,
      0.6931471824645996f,
      0.24022646248340607f,
      0.0555032454431057f,
      0.00961848720908165f,
      0.0013401415199041367f,
      0.0001534958864795044f};
};
template <>
struct Exp2Polynomial<double> {
  static constexpr int kDegree = 13;
  static constexpr double kCoefficients[kDegree + 1] = {
      1.0,
      0.6931471805599453,
      0.24022650695910072,
      0.05550410866482158,
      0.009618129107628477,
      0.0013333558146428443,
      0.0001540353039338161,
      1.5252733804059841e-05,
      1.321548679014431e-06,
      1.01780860092397e-07,
      7.054911620801123e-09,
      4.4455382718708116e-10,
      2.5678435993488206e-11,
      1.3691488853904128e-12};
};

// (always inlined, like qif_fma, into the block loops compiled for FMA hardware, where each
// Horner step below is one fused multiply-add: half the instructions of a multiply and an add,
// and the same bits in every ISA build)
template <typename S, typename Bits, int kMinExponent, int kMaxExponent, int kMantissaBits,
          int kBias>
#if defined(__GNUC__)
[[gnu::always_inline]]
#endif
inline S qif_exp2_cpu(S x) {
  using Unsigned = std::make_unsigned_t<Bits>;
  // Adding kRound = 1.5 * 2^mantissa bits rounds |x| < 2^(mantissa bits - 1) to an integer n, in
  // the current rounding mode, branch-free, and leaves n in the low bits of the sum
  // (bits(kRound) + n), from where the exponent bits of 2^n come without a conversion.
  // (Bits is an integer of S's width: the vector units shift those.) The clamps pass NaN on
  // (it compares false), so the result is NaN too.
  constexpr S kRound = S(3) * static_cast<S>(Bits{1} << (kMantissaBits - 1));
  const S below_max = x > S(kMaxExponent) ? S(kMaxExponent) : x;
  const S clamped = below_max < S(kMinExponent) ? S(kMinExponent) : below_max;
  const S rounded = clamped + kRound;
  const S f = clamped - (rounded - kRound);
  using Polynomial = Exp2Polynomial<S>;
  constexpr const S* c = Polynomial::kCoefficients;
  S poly = c[Polynomial::kDegree];
#if defined(__GNUC__) && !defined(__CUDACC__)
#pragma GCC unroll 16  // (rolled, the loops over neurons around it would not vectorize)
#endif
  for (int k = Polynomial::kDegree - 1; k >= 0; --k) poly = qif_fma(poly, f, c[k]);
  Unsigned rounded_bits, round_bits;
  const S round = kRound;
  std::memcpy(&rounded_bits, &rounded, sizeof rounded);
  std::memcpy(&round_bits, &round, sizeof round);
  const Unsigned exponent = (rounded_bits - round_bits + Unsigned(kBias)) << kMantissaBits;
  S scale;
  std::memcpy(&scale, &exponent, sizeof scale);
  return poly * scale;
}

QIF_HD float qif_exp2(float x) {
#if defined(__CUDA_ARCH__)
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
  return r;
#else
  return qif_exp2_cpu<float, int32_t, -126, 127, 23, 127>(x);
#endif
}
QIF_HD double qif_exp2(double x) {
#if defined(__CUDA_ARCH__)
  return exp2(x);
#else
  return qif_exp2_cpu<double, int64_t, -1022, 1023, 52, 1023>(x);
#endif
}
QIF_HD float qif_divide(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdividef(a, b);  // 0 for |b| > 2^126, where a / b is below 2^-126 |a| anyway
#else
  return a / b;
#endif
}
QIF_HD double qif_divide(double a, double b) { return a / b; }
QIF_HD float qif_abs(float x) { return fabsf(x); }
QIF_HD double qif_abs(double x) { return fabs(x); }
QIF_HD bool qif_is_finite(float x) { return fabsf(x) <= FLT_MAX; }  // false for NaN too
QIF_HD bool qif_is_finite(double x) { return fabs(x) <= DBL_MAX; }

// charge: H[t] = V[t-1] + (X[t] + a0 (V[t-1] - v_rest)(V[t-1] - v_c)) / tau, expanded in V[t-1]
// (QifParams) and evaluated as three fused multiply-adds. Only two of them lie on the chain from
// one step's V to the next, against six operations in the formula's own order: the serial part
// of a long sequence of few neurons (benchmarks/NOTES.md, "What bounds the long-T forward" and
// "The charge as a polynomial in V; what else bounds the long-T forward"). It rounds a few ulp away
// from the formula as written; jaxqif/reference.py evaluates the same polynomial, unfused unless
// XLA fuses it. The CPU and CUDA handlers, built without FMA contraction elsewhere, agree bit
// for bit. In two parts, H = qif_charge_slope(V[t-1]) V[t-1] + qif_drive(X[t]), for a kernel
// that carries the slope from step to step (the bulk forward).
template <typename S>
QIF_HD S qif_drive(S x, const QifParams<S>& p) {
  return qif_fma(x, p.inv_tau, p.charge_v0);  // off the chain: X is known ahead
}

template <typename S>
QIF_HD S qif_charge_slope(S v_prev, const QifParams<S>& p) {
  return qif_fma(p.charge_v2, v_prev, p.charge_v1);
}

template <typename S>
QIF_HD S qif_charge(S v_prev, S x, const QifParams<S>& p) {
  return qif_fma(qif_charge_slope(v_prev, p), v_prev, qif_drive(x, p));
}

template <typename S>
QIF_HD bool qif_fires(S h, const QifParams<S>& p) {
  return h >= p.v_threshold;
}

// V[t] after the reset. Hard: V = S v_reset + (1 - S) H; soft: V = H - S v_threshold.
template <bool kHardReset, typename S>
QIF_HD S qif_reset(S h, bool spike, const QifParams<S>& p) {
  // (both choices computed first, then selected: no load that depends on the spike, so that
  // the CPU's loops over neurons if-convert and vectorize)
  const S fired = kHardReset ? p.v_reset : h - p.v_threshold;
  return spike ? fired : h;
}

// V[t] recomputed from H[t] alone: the backward reads H and never a stored V.
template <bool kHardReset, typename S>
QIF_HD S qif_state_after(S h, const QifParams<S>& p) {
  return qif_reset<kHardReset>(h, qif_fires(h, p), p);
}

// The surrogates. Each folds its constants in double, sigma'(x) with x = H - v_threshold, and
// evaluates its gradient from them: u = scale x (SurrogateConstants), gain and coef.
constexpr double kLog2e = 1.4426950408889634;
constexpr double kHalfPi = 1.5707963267948966;
constexpr double kInvSqrtPi = 0.56418958354775628;

// u = -alpha log2(e) x: s = 1 / (1 + 2^u), sigma' = alpha s (1 - s).
template <>
struct SurrogateTraits<SurrogateKind::kSigmoid> {
  static SurrogateConstants constants(double alpha) { return {-alpha * kLog2e, alpha, 0.0}; }
  template <typename S>
  static QIF_HD S grad(S u, const QifParams<S>& p) {
    const S one = S(1);
    const S s = qif_divide(one, one + qif_exp2(u));
    return p.sg_gain * (s - s * s);
  }
};

// u = (pi / 2) alpha x: sigma' = (alpha / 2) / (1 + u^2).
template <>
struct SurrogateTraits<SurrogateKind::kATan> {
  static SurrogateConstants constants(double alpha) { return {kHalfPi * alpha, alpha / 2, 0.0}; }
  template <typename S>
  static QIF_HD S grad(S u, const QifParams<S>& p) {
    const S one = S(1);
    return qif_divide(p.sg_gain, one + u * u);
  }
};

// u = x: sigma' = max(0, alpha - alpha^2 |u|).
template <>
struct SurrogateTraits<SurrogateKind::kPiecewiseQuadratic> {
  static SurrogateConstants constants(double alpha) { return {1.0, alpha, -alpha * alpha}; }
  template <typename S>
  static QIF_HD S grad(S u, const QifParams<S>& p) {
    const S g = p.sg_gain + p.sg_coef * qif_abs(u);
    return g > S(0) ? g : S(0);
  }
};

// u = x: sigma' = (alpha / 2) 2^(-alpha log2(e) |u|).
template <>
struct SurrogateTraits<SurrogateKind::kPiecewiseExp> {
  static SurrogateConstants constants(double alpha) { return {1.0, alpha / 2, -alpha * kLog2e}; }
  template <typename S>
  static QIF_HD S grad(S u, const QifParams<S>& p) {
    return p.sg_gain * qif_exp2(p.sg_coef * qif_abs(u));
  }
};

// gain / (coef + |u|)^2: SoftSign's and SuperSpike's gradient.
template <typename S>
QIF_HD S qif_inverse_square(S u, const QifParams<S>& p) {
  const S d = p.sg_coef + qif_abs(u);
  return qif_divide(p.sg_gain, d * d);
}

// u = x: sigma' = (1 / (2 alpha)) / (1 / alpha + |u|)^2.
template <>
struct SurrogateTraits<SurrogateKind::kSoftSign> {
  static SurrogateConstants constants(double alpha) {
    return {1.0, 1.0 / (2 * alpha), 1.0 / alpha};
  }
  template <typename S>
  static QIF_HD S grad(S u, const QifParams<S>& p) {
    return qif_inverse_square(u, p);
  }
};

// u = x: sigma' = alpha / (1 + |u|)^2.
template <>
struct SurrogateTraits<SurrogateKind::kSuperSpike> {
  static SurrogateConstants constants(double alpha) { return {1.0, alpha, 1.0}; }
  template <typename S>
  static QIF_HD S grad(S u, const QifParams<S>& p) {
    return qif_inverse_square(u, p);
  }
};

// u = alpha x: sigma' = (alpha / sqrt(pi)) 2^(-log2(e) u^2).
template <>
struct SurrogateTraits<SurrogateKind::kErf> {
  static SurrogateConstants constants(double alpha) { return {alpha, alpha * kInvSqrtPi, -kLog2e}; }
  template <typename S>
  static QIF_HD S grad(S u, const QifParams<S>& p) {
    return p.sg_gain * qif_exp2(p.sg_coef * (u * u));
  }
};

// Every surrogate of the list has its traits.
#define JAXQIF_SURROGATE_HAS_TRAITS(NAME, ID)                        \
  static_assert(sizeof(SurrogateTraits<SurrogateKind::k##NAME>) > 0, \
                "JAXQIF_SURROGATES: " #NAME " has no SurrogateTraits");
JAXQIF_SURROGATES(JAXQIF_SURROGATE_HAS_TRAITS)
#undef JAXQIF_SURROGATE_HAS_TRAITS

// sigma'(H - v_threshold), from the folded constants of QifParams.
template <SurrogateKind kKind, typename S>
QIF_HD S qif_surrogate_grad(S h, const QifParams<S>& p) {
  const S u = p.sg_scale * (h - p.v_threshold);
  return SurrogateTraits<kKind>::grad(u, p);
}

// dV[t]/dH[t] through the reset, with the surrogate standing in for dS/dH.
// detach_reset drops S's gradient in the reset only. The hard reset's surrogate term,
// (v_reset - H) sigma', is 0 where H is not finite (sigma' is 0 there: the limit), rather than
// 0 * inf = NaN, as in jaxqif/reference.py.
template <bool kHardReset, typename S>
QIF_HD S qif_dv_dh(S h, bool spike, S surrogate_grad, const QifParams<S>& p) {
  // detach_reset as a factor of 0 or 1 on the spike's term rather than a choice between two
  // expressions: the same values (1 x = x; 0 x = 0 for the finite x here), and no choice on a
  // call-wide flag inside the CPU's vectorized loops over neurons.
  const S attached = p.detach_reset ? S(0) : S(1);
  if (kHardReset) {
    const S keep = spike ? S(0) : S(1);
    const S reset_gap = qif_is_finite(h) ? p.v_reset - h : S(0);
    return qif_fma(attached, reset_gap * surrogate_grad, keep);
  }
  return qif_fma(-attached * p.v_threshold, surrogate_grad, S(1));
}

// dH[t]/dV[t-1] = 1 + a0 (2 V[t-1] - v_rest - v_c) / tau: the charge polynomial's derivative.
template <typename S>
QIF_HD S qif_dh_dv(S v_prev, const QifParams<S>& p) {
  return qif_fma(p.dh_dv_slope, v_prev, p.charge_v1);
}

// What one step of BPTT learns besides dL/dH[t] (grad_h): c = dL/dV[t] through V[t] (the
// cotangent of V[t] itself plus what flows back from later steps), sigma' and S[t]. The parameter
// gradients (ParamGradSums) are made of these.
template <typename S>
struct StepDerivatives {
  S grad_h, c, sg;
  bool spike;
};

// One step of BPTT, walking t downwards. `carry` is dL/dV[t] from steps after t (plus the
// cotangent of v_final at t = T-1). Returns dL/dH[t]; carry becomes dL/dV[t-1]. `observe`, if
// given, sees the step's StepDerivatives.
template <SurrogateKind kKind, bool kHardReset, typename S, typename Observe>
QIF_HD S qif_backward_step(S h, S v_prev, S grad_spike, S grad_v, S& carry,
                           const QifParams<S>& p, Observe&& observe) {
  const bool spike = qif_fires(h, p);
  const S sg = qif_surrogate_grad<kKind>(h, p);
  const S c = grad_v + carry;
  const S grad_h = qif_fma(grad_spike, sg, c * qif_dv_dh<kHardReset>(h, spike, sg, p));
  observe(StepDerivatives<S>{grad_h, c, sg, spike});
  carry = grad_h * qif_dh_dv(v_prev, p);
  return grad_h;
}

template <SurrogateKind kKind, bool kHardReset, typename S>
QIF_HD S qif_backward_step(S h, S v_prev, S grad_spike, S grad_v, S& carry,
                           const QifParams<S>& p) {
  return qif_backward_step<kKind, kHardReset>(h, v_prev, grad_spike, grad_v, carry, p,
                                              [](const StepDerivatives<S>&) {});
}

// One neuron's parameter gradients, summed over its steps as BPTT walks them (in registers:
// nothing per step is stored) and turned into dL/d(parameter) at the end. With V = V[t-1],
// G = dL/dH[t], c, sigma' and S as in StepDerivatives, and g_s = dL/dS[t] (the spike's own
// cotangent, and through the reset unless detach_reset):
//   dH/dtau = -(x + a0 (V - v_rest)(V - v_c)) / tau^2, dH/da0 = (V - v_rest)(V - v_c) / tau,
//   dH/dv_rest = -a0 (V - v_c) / tau, dH/dv_c = -a0 (V - v_rest) / tau,
//   dS/dv_threshold = -sigma', and the soft reset's dV/dv_threshold = -S;
//   dV/dv_reset = S (hard reset).
template <typename S>
struct ParamGradSums {
  S charge = S(0);     // sum G (x + a0 (V - v_rest)(V - v_c))
  S curvature = S(0);  // sum G (V - v_rest)(V - v_c)
  S from_rest = S(0);  // sum G (V - v_c)
  S from_c = S(0);     // sum G (V - v_rest)
  S threshold = S(0);  // dL/dv_threshold
  S reset = S(0);      // dL/dv_reset

  template <bool kHardReset>
  QIF_HD void add(const StepDerivatives<S>& d, S h, S v_prev, S x, S grad_spike,
                  const QifParams<S>& p, const NeuronValues<S>& n) {
    const S dv_ds = kHardReset ? (qif_is_finite(h) ? p.v_reset - h : S(0)) : -p.v_threshold;
    // (detach_reset as a factor, as in qif_dv_dh: no choice on a call-wide flag in the CPU's
    // vectorized loops)
    const S attached = p.detach_reset ? S(0) : S(1);
    const S g_s = grad_spike + attached * (d.c * dv_ds);
    const S fired = d.spike ? S(1) : S(0);
    threshold -= g_s * d.sg;
    if constexpr (kHardReset) {
      reset += d.c * fired;
    } else {
      threshold -= d.c * fired;
    }
    const S from_v_rest = v_prev - n.v_rest, from_v_c = v_prev - n.v_c;
    const S product = from_v_rest * from_v_c;
    charge += d.grad_h * (x + n.a0 * product);
    curvature += d.grad_h * product;
    from_rest += d.grad_h * from_v_c;
    from_c += d.grad_h * from_v_rest;
  }

  // dL/d(parameter j) of this neuron.
  QIF_HD S gradient(int j, const NeuronValues<S>& n) const {
    switch (j) {
      case kTau: return -charge / (n.tau * n.tau);
      case kVC: return -n.a0 * from_c / n.tau;
      case kA0: return curvature / n.tau;
      case kVThreshold: return threshold;
      case kVRest: return -n.a0 * from_rest / n.tau;
      case kVReset: return reset;
    }
    return S(0);  // (no other j: the callers walk 0 .. kNumParams - 1)
  }
};

// The same step written on G[t] = dL/dH[t]. Once H[t] is known the recurrence is affine,
//   G[t] = decay * G[t+1] + drive,
//   decay = dV[t]/dH[t] * dH[t+1]/dV[t]   (dV/dH alone at t = T-1, where G[T] = dL/dV_final),
//   drive = grad_spike sigma' + grad_v dV[t]/dH[t],
// and needs H[t] only, so the CUDA backward can split the time axis into segments, compose each
// segment's map in parallel and chain the few composites. grad_x[t] = G[t] / tau and
// grad_v_init = G[0] dH[0]/dV[-1].
template <SurrogateKind kKind, bool kHardReset, typename S>
QIF_HD void qif_backward_affine(S h, S grad_spike, S grad_v, bool last_step,
                                const QifParams<S>& p, S& decay, S& drive) {
  const bool spike = qif_fires(h, p);
  const S sg = qif_surrogate_grad<kKind>(h, p);
  const S dv_dh = qif_dv_dh<kHardReset>(h, spike, sg, p);
  drive = grad_spike * sg + grad_v * dv_dh;
  decay = last_step ? dv_dh : dv_dh * qif_dh_dv(qif_reset<kHardReset>(h, spike, p), p);
}

}  // namespace jaxqif
