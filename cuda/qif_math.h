// Step, reset and surrogate math of the QIF neuron: the one source of these formulas for the CPU
// and CUDA handlers. Everything here is computed in the state type S (float for float16, bfloat16
// and float32 inputs; double for float64), one neuron at a time.
#pragma once

#include <cfloat>
#include <cmath>
#include <cstdint>

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

// Neuron parameters, already converted to the state type. Derived constants are computed in
// double and rounded once.
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
// more, and the time-parallel backward is bound by instruction issue). Only the backward
// evaluates them, and its gradients are compared at a tolerance, never bit for bit.
QIF_HD float qif_exp2(float x) {
#if defined(__CUDA_ARCH__)
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
  return r;
#else
  return exp2f(x);
#endif
}
QIF_HD double qif_exp2(double x) { return exp2(x); }
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
  if (kHardReset) return spike ? p.v_reset : h;
  return spike ? h - p.v_threshold : h;
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
  if (kHardReset) {
    const S keep = spike ? S(0) : S(1);
    const S reset_gap = qif_is_finite(h) ? p.v_reset - h : S(0);
    return p.detach_reset ? keep : keep + reset_gap * surrogate_grad;
  }
  return p.detach_reset ? S(1) : S(1) - p.v_threshold * surrogate_grad;
}

// dH[t]/dV[t-1] = 1 + a0 (2 V[t-1] - v_rest - v_c) / tau: the charge polynomial's derivative.
template <typename S>
QIF_HD S qif_dh_dv(S v_prev, const QifParams<S>& p) {
  return p.dh_dv_slope * v_prev + p.charge_v1;
}

// One step of BPTT, walking t downwards. `carry` is dL/dV[t] from steps after t (plus the
// cotangent of v_final at t = T-1). Returns dL/dH[t]; carry becomes dL/dV[t-1].
template <SurrogateKind kKind, bool kHardReset, typename S>
QIF_HD S qif_backward_step(S h, S v_prev, S grad_spike, S grad_v, S& carry,
                           const QifParams<S>& p) {
  const bool spike = qif_fires(h, p);
  const S sg = qif_surrogate_grad<kKind>(h, p);
  const S grad_h = grad_spike * sg + (grad_v + carry) * qif_dv_dh<kHardReset>(h, spike, sg, p);
  carry = grad_h * qif_dh_dv(v_prev, p);
  return grad_h;
}

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
