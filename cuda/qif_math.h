// Step, reset and surrogate math of the QIF neuron: the one source of these formulas for the CPU
// and CUDA handlers. Everything here is computed in the state type S (float for float16, bfloat16
// and float32 inputs; double for float64), one neuron at a time.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define QIF_HD __host__ __device__ __forceinline__
#else
#define QIF_HD inline
#endif

namespace jaxqif {

// Numbering shared with jaxqif/surrogate.py (each surrogate's `kernel_id`).
enum class SurrogateKind : int64_t {
  kSigmoid = 0,
  kATan = 1,
  kPiecewiseQuadratic = 2,
  kPiecewiseExp = 3,
  kSoftSign = 4,
  kSuperSpike = 5,
  kErf = 6,
};
constexpr int64_t kNumSurrogates = 7;

// Neuron parameters, already converted to the state type. Derived constants are computed in
// double and rounded once, exactly as jaxqif/reference.py does, so both paths see the same bits.
template <typename S>
struct QifParams {
  S inv_tau;      // 1 / tau
  S v_c;
  S a0;
  S v_threshold;
  S v_rest;
  S v_reset;      // hard reset only
  S alpha;        // surrogate sharpness (backward only)
  bool hard_reset;
  bool detach_reset;

  static QifParams from_double(double tau, double v_c, double a0, double v_threshold,
                               double v_rest, double v_reset, double alpha, bool hard_reset,
                               bool detach_reset) {
    return QifParams{static_cast<S>(1.0 / tau), static_cast<S>(v_c),       static_cast<S>(a0),
                     static_cast<S>(v_threshold), static_cast<S>(v_rest),  static_cast<S>(v_reset),
                     static_cast<S>(alpha),       hard_reset,              detach_reset};
  }
};

// exp and division inside the surrogates. On the GPU, float uses the hardware's approximate
// exp2 and reciprocal (a few ulp; the correctly rounded versions take several instructions
// more, and the time-parallel backward is bound by instruction issue). Only the backward
// evaluates them, and its gradients are compared at a tolerance, never bit for bit.
QIF_HD float qif_exp(float x) {
#if defined(__CUDA_ARCH__)
  return __expf(x);
#else
  return expf(x);
#endif
}
QIF_HD double qif_exp(double x) { return exp(x); }
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

// charge: H[t] = V[t-1] + (X[t] + a0 (V[t-1] - v_rest)(V[t-1] - v_c)) / tau.
// The operation order matches jaxqif/reference.py; built without FMA contraction, the CPU and
// CUDA handlers agree bit for bit.
template <typename S>
QIF_HD S qif_charge(S v_prev, S x, const QifParams<S>& p) {
  return v_prev + (x + p.a0 * (v_prev - p.v_rest) * (v_prev - p.v_c)) * p.inv_tau;
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

// sigma'(x), x = H - v_threshold.
template <SurrogateKind kKind, typename S>
QIF_HD S qif_surrogate_grad(S x, S alpha) {
  const S one = S(1);
  if constexpr (kKind == SurrogateKind::kSigmoid) {
    const S s = qif_divide(one, one + qif_exp(-alpha * x));
    return alpha * s * (one - s);
  } else if constexpr (kKind == SurrogateKind::kATan) {
    const S u = S(1.5707963267948966) * alpha * x;
    return qif_divide(alpha / S(2), one + u * u);
  } else if constexpr (kKind == SurrogateKind::kPiecewiseQuadratic) {
    const S g = alpha - alpha * alpha * qif_abs(x);
    return g > S(0) ? g : S(0);
  } else if constexpr (kKind == SurrogateKind::kPiecewiseExp) {
    return (alpha / S(2)) * qif_exp(-alpha * qif_abs(x));
  } else if constexpr (kKind == SurrogateKind::kSoftSign) {
    const S d = one / alpha + qif_abs(x);
    return qif_divide(one, S(2) * alpha * d * d);
  } else if constexpr (kKind == SurrogateKind::kSuperSpike) {
    const S d = one + qif_abs(x);
    return qif_divide(alpha, d * d);
  } else {  // kErf
    const S u = alpha * x;
    return (alpha * S(0.56418958354775628)) * qif_exp(-u * u);  // alpha / sqrt(pi)
  }
}

// dV[t]/dH[t] through the reset, with the surrogate standing in for dS/dH.
// detach_reset drops S's gradient in the reset only.
template <bool kHardReset, typename S>
QIF_HD S qif_dv_dh(S h, bool spike, S surrogate_grad, const QifParams<S>& p) {
  if (kHardReset) {
    const S keep = spike ? S(0) : S(1);
    return p.detach_reset ? keep : keep + (p.v_reset - h) * surrogate_grad;
  }
  return p.detach_reset ? S(1) : S(1) - p.v_threshold * surrogate_grad;
}

// dH[t]/dV[t-1] = 1 + a0 (2 V[t-1] - v_rest - v_c) / tau.
template <typename S>
QIF_HD S qif_dh_dv(S v_prev, const QifParams<S>& p) {
  return S(1) + p.a0 * (S(2) * v_prev - p.v_rest - p.v_c) * p.inv_tau;
}

// One step of BPTT, walking t downwards. `carry` is dL/dV[t] from steps after t (plus the
// cotangent of v_final at t = T-1). Returns dL/dH[t]; carry becomes dL/dV[t-1].
template <SurrogateKind kKind, bool kHardReset, typename S>
QIF_HD S qif_backward_step(S h, S v_prev, S grad_spike, S grad_v, S& carry,
                           const QifParams<S>& p) {
  const bool spike = qif_fires(h, p);
  const S sg = qif_surrogate_grad<kKind>(h - p.v_threshold, p.alpha);
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
  const S sg = qif_surrogate_grad<kKind>(h - p.v_threshold, p.alpha);
  const S dv_dh = qif_dv_dh<kHardReset>(h, spike, sg, p);
  drive = grad_spike * sg + grad_v * dv_dh;
  decay = last_step ? dv_dh : dv_dh * qif_dh_dv(qif_reset<kHardReset>(h, spike, p), p);
}

// Calls fn.template operator()<kKind, kHardReset>() with the runtime choices as template
// arguments, so each kernel is compiled once per surrogate and reset mode.
template <typename Fn>
auto dispatch_surrogate_reset(int64_t surrogate, bool hard_reset, Fn&& fn) {
#define QIF_CASE(KIND)                                                    \
  case static_cast<int64_t>(SurrogateKind::KIND):                         \
    return hard_reset ? fn.template operator()<SurrogateKind::KIND, true>() \
                      : fn.template operator()<SurrogateKind::KIND, false>();
  switch (surrogate) {
    QIF_CASE(kSigmoid)
    QIF_CASE(kATan)
    QIF_CASE(kPiecewiseQuadratic)
    QIF_CASE(kPiecewiseExp)
    QIF_CASE(kSoftSign)
    QIF_CASE(kSuperSpike)
    default:  // kErf; handlers reject ids outside [0, kNumSurrogates) before dispatching
      QIF_CASE(kErf)
  }
#undef QIF_CASE
}

}  // namespace jaxqif
