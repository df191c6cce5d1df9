// The CPU kernels: the same formulas as the CUDA ones (qif_math.h), a block of neurons at a time.
//
// Work comes in blocks of up to kBlock neurons of one row (the neurons of [outer, T, inner] with
// the same outer index): a block walks all T steps with its state in a few arrays on the stack
// (the backward also its interval of H and its parameter sums), which stay in the L1 cache, and
// its inner loops over neurons are written to vectorize (no struct copied, no call-wide choice
// and no load that depends on a spike inside them; see the notes there). They are compiled for
// the baseline ISA, for AVX2 + FMA and for AVX-512, and run_block picks the widest the CPU has.
// Blocks run in parallel on XLA's intra-op thread pool (the FFI's ThreadPool); each block is
// computed by one thread alone, so the results are the same bits for any number of threads.
//
// Included by cuda/qif_cpu.cc (the handlers and the forward) and by the backward's translation
// units, one per surrogate, that CMakeLists.txt generates (cpu_backward<kKind> below): its
// helpers have internal linkage, so each unit keeps its own.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
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

// The conversions are branch-free (selects), so that the loops over a block's neurons that use
// them vectorize.
inline float to_state(float v) { return v; }
inline double to_state(double v) { return v; }
inline float to_state(BFloat16 v) { return bits_to_float(static_cast<uint32_t>(v.bits) << 16); }
inline float to_state(Half v) {
  const uint32_t h = v.bits;
  const uint32_t sign = (h & 0x8000u) << 16;
  const uint32_t magnitude = (h & 0x7fffu) << 13;  // exponent and mantissa, float-aligned
  const uint32_t exponent = magnitude & 0x0f800000u;
  // normal: rebias the exponent by 127 - 15; inf and nan: to the float's all-ones exponent;
  // zero and subnormal: mantissa 2^-24 exactly, via a float subtraction (2^-14 (1 + m) - 2^-14)
  const uint32_t normal = magnitude + (112u << 23);
  const uint32_t special = magnitude + (224u << 23);
  const float subnormal = bits_to_float(magnitude + (113u << 23)) - bits_to_float(113u << 23);
  const uint32_t bits = exponent == 0x0f800000u ? special
                        : exponent == 0         ? float_to_bits(subnormal)
                                                : normal;
  return bits_to_float(bits | sign);
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
  const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  const uint32_t nan = (bits >> 16) | 0x40u;  // NaN: keep it a (quiet) NaN
  return BFloat16{static_cast<uint16_t>((bits & 0x7fffffffu) > 0x7f800000u ? nan : rounded)};
}
template <>
inline Half from_state<Half, float>(float v) {
  const uint32_t bits = float_to_bits(v);
  const uint32_t sign = (bits >> 16) & 0x8000u;
  const uint32_t abs = bits & 0x7fffffffu;
  // normal half: rebias the exponent, round the 13 dropped bits to nearest even
  const uint32_t rebiased = abs - 0x38000000u;
  const uint32_t normal = (rebiased + 0xfffu + ((rebiased >> 13) & 1u)) >> 13;
  // subnormal half (or zero): value / 2^-24, rounded to nearest even by float arithmetic
  // (1.5 * 2^23 forces rounding to an integer)
  const float scaled = bits_to_float(abs < 0x38800000u ? abs : 0u) * 16777216.0f;
  const uint32_t subnormal = static_cast<uint32_t>(scaled + 12582912.0f - 12582912.0f);
  const uint32_t magnitude = abs > 0x7f800000u    ? 0x7e00u  // nan
                             : abs >= 0x477ff000u ? 0x7c00u  // rounds to inf
                             : abs >= 0x38800000u ? normal
                                                  : subnormal;
  return Half{static_cast<uint16_t>(sign | magnitude)};
}

// Neurons per block: its state, and the backward's interval of H (8 steps) and parameter sums,
// stay in the L1 cache.
constexpr int64_t kBlock = 256;

// A row of zeros: the cotangents of outputs that have none.
template <typename T>
constexpr T kZeroRow[kBlock] = {};

// One block: row `o`, neurons [i0, i0 + count) of the row.
struct Block {
  int64_t o, i0, count;
  int64_t first_neuron(const Layout& l) const { return o * l.inner + i0; }
  // Element (o, t, i0) of an [outer, T, inner] array.
  int64_t offset(const Layout& l, int64_t t) const { return (o * l.steps + t) * l.inner + i0; }
};

int64_t block_count(const Layout& l) { return l.outer * ((l.inner + kBlock - 1) / kBlock); }

Block block_at(const Layout& l, int64_t index) {
  const int64_t per_row = (l.inner + kBlock - 1) / kBlock;
  const int64_t o = index / per_row, i0 = (index - o * per_row) * kBlock;
  return {o, i0, std::min(kBlock, l.inner - i0)};
}

// values[(n0 + i) % wrap.count] for i in [0, count) into out: a compact parameter array's
// values for neurons n0 .. n0 + count - 1, copied in contiguous runs.
template <typename S>
void copy_wrapped(const S* values, const IndexWrap& wrap, int64_t n0, int64_t count, S* out) {
  int64_t index = wrap_index(n0, wrap);
  for (int64_t i = 0; i < count; index = 0) {
    const int64_t run = std::min(count - i, wrap.count - index);
    std::copy(values + index, values + index + run, out + i);
    i += run;
  }
}

// The constants of a block's neurons. kPerNeuron = false: the call's QifParams, the same for
// every neuron (all parameters are numbers). kPerNeuron = true: each neuron's own, folded when
// the block is loaded (QifParams's per-neuron constructor) into arrays that the loops over the
// block's neurons read like any other stream.
template <typename S, bool kPerNeuron>
class BlockParams {
 public:
  BlockParams(const QifParams<S>& shared, const ParamArrays& arrays, const NeuronSettings& s)
      : shared_(shared), arrays_(arrays), numbers_(NeuronValues<S>::numbers(s)) {}

  // Each parameter's values for the block's neurons first, a column at a time (contiguous runs
  // of its array, or its number), then the fold, in a loop that vectorizes (NeuronValues::of a
  // neuron at a time, with a choice per parameter, kept it scalar).
  void load(const Block& b, const Layout& l) {
    if constexpr (kPerNeuron) {
      const int64_t n0 = b.first_neuron(l);
      S* const columns[kNumParams] = {tau_, v_c_, a0_, threshold_, v_rest_, reset_};
      const S numbers[kNumParams] = {numbers_.tau,         numbers_.v_c,    numbers_.a0,
                                     numbers_.v_threshold, numbers_.v_rest, numbers_.v_reset};
      for (int j = 0; j < kNumParams; ++j) {
        if (arrays_.values[j]) {
          copy_wrapped(static_cast<const S*>(arrays_.values[j]), arrays_.wraps[j], n0, b.count,
                       columns[j]);
        } else {
          std::fill(columns[j], columns[j] + b.count, numbers[j]);
        }
      }
      for (int64_t i = 0; i < b.count; ++i) {
        // (v_threshold and v_reset go into QifParams unchanged: their columns serve as both)
        const QifParams<S> p(
            NeuronValues<S>{tau_[i], v_c_[i], a0_[i], threshold_[i], v_rest_[i], reset_[i]},
            shared_);
        inv_tau_[i] = p.inv_tau, v2_[i] = p.charge_v2, v1_[i] = p.charge_v1;
        v0_[i] = p.charge_v0, slope_[i] = p.dh_dv_slope;
      }
    }
  }

  // The constants every neuron shares (all of them, without per-neuron parameters). The loops
  // take a local copy before they start, whose fields the compiler keeps in registers.
  const QifParams<S>& shared() const { return shared_; }

  // Neuron i's constants (i within the loaded block), given `shared`'s local copy: that copy
  // itself without per-neuron parameters (no struct is copied inside the loops, which would
  // keep them from vectorizing).
  decltype(auto) at(int64_t i, const QifParams<S>& shared) const {
    if constexpr (kPerNeuron) {
      return QifParams<S>(inv_tau_[i], v2_[i], v1_[i], v0_[i], threshold_[i], reset_[i],
                          slope_[i], shared);
    } else {
      return (shared);  // a reference
    }
  }

  // Neuron i's parameters, as far as their gradients need them (ParamGradSums).
  NeuronValues<S> values(int64_t i) const {
    return {tau_[i], v_c_[i], a0_[i], threshold_[i], v_rest_[i], reset_[i]};
  }

 private:
  static constexpr int64_t kSize = kPerNeuron ? kBlock : 1;
  QifParams<S> shared_;
  ParamArrays arrays_;
  NeuronValues<S> numbers_;
  // (arrays of each field rather than of structs, so that the loops load them as vectors)
  S inv_tau_[kSize], v2_[kSize], v1_[kSize], v0_[kSize], threshold_[kSize], reset_[kSize],
      slope_[kSize];
  S tau_[kSize], v_c_[kSize], a0_[kSize], v_rest_[kSize];
};

// The forward of one block. v_init: nullptr means every neuron starts at v_init_value; v_final,
// v_seq, checkpoints: nullptr means not written.
template <typename X, typename S, bool kHardReset, bool kPerNeuron>
[[gnu::always_inline]] inline void forward_block(const ForwardCall& call, const Block& b,
                                                 BlockParams<S, kPerNeuron>& params) {
  const ForwardPointers& ptr = call.ptr;
  const Layout& l = call.layout;
  constexpr int64_t kC = checkpoint_interval(sizeof(X));
  const int64_t saved = checkpoint_count(l.steps, kC);
  const S v_init_value = static_cast<S>(call.settings.v_init_value);
  // (__restrict: no output overlaps an input or the block's own arrays, which lets the loops
  // over neurons vectorize)
  const X* __restrict x = static_cast<const X*>(ptr.x);
  X* __restrict spikes = static_cast<X*>(ptr.spikes);
  S* __restrict v_seq = static_cast<S*>(ptr.v_seq);
  const S* __restrict v_init = static_cast<const S*>(ptr.v_init);
  const int64_t n0 = b.first_neuron(l), count = b.count;
  params.load(b, l);
  const QifParams<S> shared = params.shared();
  S v[kBlock];
  for (int64_t i = 0; i < count; ++i) v[i] = v_init ? v_init[n0 + i] : v_init_value;
  for (int64_t t = 0; t < l.steps; ++t) {
    const int64_t row = b.offset(l, t);
    for (int64_t i = 0; i < count; ++i) {
      const auto& p = params.at(i, shared);
      const S h = qif_charge(v[i], to_state(x[row + i]), p);
      const bool spike = qif_fires(h, p);
      spikes[row + i] = from_state<X>(spike ? S(1) : S(0));
      v[i] = qif_reset<kHardReset>(h, spike, p);
    }
    if (v_seq) std::copy(v, v + count, v_seq + row);
    if (ptr.checkpoints && (t + 1) % kC == 0 && t + 1 < l.steps) {
      std::copy(v, v + count, static_cast<S*>(ptr.checkpoints) +
                                  (b.o * saved + (t + 1) / kC - 1) * l.inner + b.i0);
    }
  }
  if (ptr.v_final) std::copy(v, v + count, static_cast<S*>(ptr.v_final) + n0);
}

// Each neuron's ParamGradSums over a block, a field per array (so that the loops load them as
// vectors): added to by the BPTT of each copy of the block (backward_block), then turned into
// the gradients (write_param_grads).
template <typename S, bool kParamGrads>
struct BlockGradSums {
  static constexpr int64_t kSize = kParamGrads ? kBlock : 1;
  S charge[kSize] = {}, curvature[kSize] = {}, from_rest[kSize] = {}, from_c[kSize] = {},
    threshold[kSize] = {}, reset[kSize] = {};

  ParamGradSums<S> at(int64_t i) const {
    return {charge[i], curvature[i], from_rest[i], from_c[i], threshold[i], reset[i]};
  }
};

// BPTT of one block, whose constants `params` has loaded, an interval of checkpoint_interval
// steps at a time from the last: each interval's H is recomputed from its checkpoint (v_init for
// the first) and x, then walked down. With per-neuron parameters whose gradients are wanted,
// each neuron's sums over its steps (ParamGradSums) are added to `sums`.
template <SurrogateKind kKind, bool kHardReset, bool kPerNeuron, bool kParamGrads, typename X,
          typename S>
[[gnu::always_inline]] inline void backward_block(const BackwardCall& call, const Block& b,
                                                  const BlockParams<S, kPerNeuron>& params,
                                                  BlockGradSums<S, kParamGrads>& sums) {
  const BackwardPointers& ptr = call.ptr;
  const Layout& l = call.layout;
  constexpr int64_t kC = checkpoint_interval(sizeof(X));
  const int64_t saved = checkpoint_count(l.steps, kC);
  const S v_init_value = static_cast<S>(call.settings.neuron.v_init_value);
  const X* __restrict x = static_cast<const X*>(ptr.x);  // (__restrict: as in forward_block)
  const X* __restrict grad_spikes = static_cast<const X*>(ptr.grad_spikes);
  const S* __restrict grad_v_seq = static_cast<const S*>(ptr.grad_v_seq);
  const S* __restrict grad_v_final = static_cast<const S*>(ptr.grad_v_final);
  const S* __restrict checkpoints = static_cast<const S*>(ptr.checkpoints);
  const S* __restrict v_init = static_cast<const S*>(ptr.v_init);
  X* __restrict grad_x = static_cast<X*>(ptr.grad_x);
  const int64_t n0 = b.first_neuron(l), count = b.count;
  const QifParams<S> shared = params.shared();
  S carry[kBlock];  // dL/dV[t] flowing back; ends as dL/dv_init
  S entry[kBlock];  // V entering the interval
  S h[kC][kBlock];  // the interval's H
  // The sums so far, in arrays of this function's own (through `sums`' pointers, the loops
  // below would not vectorize: the training step with parameter gradients took 4-10x longer).
  BlockGradSums<S, kParamGrads> local = sums;
  S* const charge = local.charge;
  S* const curvature = local.curvature;
  S* const from_rest = local.from_rest;
  S* const from_c = local.from_c;
  S* const threshold = local.threshold;
  S* const reset = local.reset;
  for (int64_t i = 0; i < count; ++i) carry[i] = grad_v_final ? grad_v_final[n0 + i] : S(0);
  for (int64_t k = saved; k >= 0; --k) {
    const int64_t t0 = k * kC, len = std::min(kC, l.steps - t0);
    for (int64_t i = 0; i < count; ++i) {
      entry[i] = k > 0     ? checkpoints[(b.o * saved + k - 1) * l.inner + b.i0 + i]
                 : v_init ? v_init[n0 + i]
                          : v_init_value;
    }
    for (int64_t u = 0; u < len; ++u) {
      const X* x_row = x + b.offset(l, t0 + u);
      for (int64_t i = 0; i < count; ++i) {
        const auto& p = params.at(i, shared);
        const S v = u > 0 ? qif_state_after<kHardReset>(h[u - 1][i], p) : entry[i];
        h[u][i] = qif_charge(v, to_state(x_row[i]), p);
      }
    }
    for (int64_t u = len - 1; u >= 0; --u) {
      const int64_t row = b.offset(l, t0 + u);
      // The step's cotangents, or a row of zeros where absent: the loops below read every
      // stream unconditionally, and vectorize.
      const X* __restrict g_spike = grad_spikes ? grad_spikes + row : kZeroRow<X>;
      const S* __restrict g_v = grad_v_seq ? grad_v_seq + row : kZeroRow<S>;
      // (always inlined: left a call, as GCC leaves it where the parameter gradients make it
      // long, the loops below do not vectorize)
      auto step = [&](int64_t i, const QifParams<S>& p, S v_prev) __attribute__((always_inline)) {
        const S grad_spike = to_state(g_spike[i]);
        S grad_h;
        if constexpr (kParamGrads) {
          grad_h = qif_backward_step<kKind, kHardReset>(
              h[u][i], v_prev, grad_spike, g_v[i], carry[i], p,
              [&](const StepDerivatives<S>& d) __attribute__((always_inline)) {
                ParamGradSums<S> step_sums{charge[i], curvature[i], from_rest[i],
                                           from_c[i], threshold[i], reset[i]};
                step_sums.template add<kHardReset>(d, h[u][i], v_prev, S(to_state(x[row + i])),
                                                   grad_spike, p, params.values(i));
                charge[i] = step_sums.charge, curvature[i] = step_sums.curvature;
                from_rest[i] = step_sums.from_rest, from_c[i] = step_sums.from_c;
                threshold[i] = step_sums.threshold, reset[i] = step_sums.reset;
              });
        } else {
          grad_h = qif_backward_step<kKind, kHardReset>(h[u][i], v_prev, grad_spike, g_v[i],
                                                        carry[i], p);
        }
        grad_x[row + i] = from_state<X>(grad_h * p.inv_tau);
      };
      // (V[t-1] from the step below, or the interval's entry: two loops rather than a choice
      // inside one, which would keep it from vectorizing)
      if (u > 0) {
        for (int64_t i = 0; i < count; ++i) {
          const auto& p = params.at(i, shared);
          step(i, p, qif_state_after<kHardReset>(h[u - 1][i], p));
        }
      } else {
        for (int64_t i = 0; i < count; ++i) step(i, params.at(i, shared), entry[i]);
      }
    }
  }
  if (ptr.grad_v_init) std::copy(carry, carry + count, static_cast<S*>(ptr.grad_v_init) + n0);
  if constexpr (kParamGrads) sums = local;
}

// The wanted parameter gradients of `count` neurons from their sums: gradient j's elements
// [first, first + count) at grads[j] (nullptr: not wanted).
template <typename S, bool kPerNeuron, bool kParamGrads>
void write_param_grads(const BlockGradSums<S, kParamGrads>& sums,
                       const BlockParams<S, kPerNeuron>& params, S* const grads[kNumParams],
                       int64_t first, int64_t count) {
  for (int j = 0; j < kNumParams; ++j) {
    if (!grads[j]) continue;
    for (int64_t i = 0; i < count; ++i) {
      grads[j][first + i] = sums.at(i).gradient(j, params.values(i));
    }
  }
}

// The block loops are compiled three times on x86-64, for the baseline ISA, for AVX2 + FMA (where
// std::fma is one instruction, and the loops over neurons vectorize) and for AVX-512, and
// run_block picks the widest the CPU has at run time; all round identically (one rounding per
// fma, no other contraction).
#if defined(__x86_64__) && defined(__GNUC__)
template <auto kBody, typename... Args>
[[gnu::target("avx2,fma")]] void run_block_avx2(Args&&... args) {
  kBody(args...);
}

template <auto kBody, typename... Args>
[[gnu::target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,prefer-vector-width=512")]] void
run_block_avx512(Args&&... args) {
  kBody(args...);
}

enum class Isa { kBaseline, kAvx2, kAvx512 };

inline Isa cpu_isa() {
  static const Isa isa = [] {
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512dq");
    return avx512 ? Isa::kAvx512 : avx2 ? Isa::kAvx2 : Isa::kBaseline;
  }();
  return isa;
}
#endif

template <auto kBody, typename... Args>
void run_block(Args&&... args) {
#if defined(__x86_64__) && defined(__GNUC__)
  switch (cpu_isa()) {
    case Isa::kAvx512: return run_block_avx512<kBody>(args...);
    case Isa::kAvx2: return run_block_avx2<kBody>(args...);
    case Isa::kBaseline: break;
  }
#endif
  kBody(args...);
}

// Runs work(index) for index in [0, count) on XLA's intra-op threads and this one, and returns
// when all are done. Blocks are claimed from a shared counter, so the work spreads over however
// many threads turn up; this thread claims too, and waits only for blocks others have claimed,
// never for a task still queued (a busy pool cannot stall it). Queued tasks that start after
// the work is gone return at once: what they touch (the counters) is reference-counted.
template <typename Work>
void parallel_blocks(ffi::ThreadPool& pool, int64_t count, const Work& work) {
  struct Progress {
    std::atomic<int64_t> next{0}, done{0};
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), count) - 1;
  if (helpers <= 0) {
    for (int64_t index = 0; index < count; ++index) work(index);
    return;
  }
  auto progress = std::make_shared<Progress>();
  auto drain = [count](Progress& state, const Work* task) {
    for (int64_t index; (index = state.next.fetch_add(1)) < count;) {
      (*task)(index);
      if (state.done.fetch_add(1, std::memory_order_release) + 1 == count) {
        state.done.notify_all();  // the last block: wake the caller
      }
    }
  };
  for (int64_t h = 0; h < helpers; ++h) {
    // `work` lives on this thread's stack until every claimed block is done, and a task that
    // claims nothing never calls it.
    pool.Schedule([progress, drain, task = &work] { drain(*progress, task); });
  }
  drain(*progress, &work);
  // (asleep, not spinning: on a machine with no core to spare, the blocks still being computed
  // need this one)
  for (int64_t done; (done = progress->done.load(std::memory_order_acquire)) < count;) {
    progress->done.wait(done, std::memory_order_acquire);
  }
}

// The CPU side of the input dtypes (DTypeTraits, qif_ffi.h): each one's input type, whose
// conversions to and from the state type are to_state / from_state above.
template <ffi::DataType kDType> struct CpuDType;
template <ffi::DataType kDType, typename InputType>
struct CpuDTypeOf : DTypeTraits<kDType> {
  using Input = InputType;
};
template <> struct CpuDType<ffi::DataType::F16> : CpuDTypeOf<ffi::DataType::F16, Half> {};
template <> struct CpuDType<ffi::DataType::BF16> : CpuDTypeOf<ffi::DataType::BF16, BFloat16> {};
template <> struct CpuDType<ffi::DataType::F32> : CpuDTypeOf<ffi::DataType::F32, float> {};
template <> struct CpuDType<ffi::DataType::F64> : CpuDTypeOf<ffi::DataType::F64, double> {};

}  // namespace

// The forward (cuda/qif_cpu.cc) and the backward of surrogate kKind (its own translation unit,
// generated by CMakeLists.txt: JAXQIF_CPU_BACKWARD_INSTANCE).
ffi::Error cpu_forward(ffi::ThreadPool pool, const ForwardCall& call);

// How the backward's work is cut, where the parameter gradients are summed over the copies of a
// block of `block` neurons (ParamGrads; block = the neuron count: one gradient per neuron, one
// copy). A task walks a column (up to kBlock neurons of one row of the block) through the
// copies of one group, its sums carried from copy to copy; the groups' gradients are then added
// up in order. The cut depends on the shape alone, so the results are the same bits for any
// number of threads.
struct CopyWork {
  int64_t block, copies, width, columns_per_row, columns, groups, copies_per_group;

  // (a column is a run of neurons in one row of the layout: the block's rows, of `width`
  // neurons, are whole rows or lie within one, as both are trailing blocks of the neurons and
  // check_param_grads makes sure)
  CopyWork(const Layout& l, int64_t block_neurons) : block(block_neurons) {
    copies = l.neurons() / block;
    width = std::min(block, l.inner);
    columns_per_row = (width + kBlock - 1) / kBlock;
    columns = block / width * columns_per_row;
    // Few columns (a small block shared by many copies): the copies split into groups too, so
    // that the work spreads over the threads.
    constexpr int64_t kMinTasks = 16;
    groups = std::min(copies, (kMinTasks + columns - 1) / columns);
    copies_per_group = (copies + groups - 1) / groups;
    groups = (copies + copies_per_group - 1) / copies_per_group;
  }
  int64_t tasks() const { return columns * groups; }
  // Column `column`'s first neuron within the block, and its neuron count.
  int64_t first(int64_t column) const {
    return column / columns_per_row * width + column % columns_per_row * kBlock;
  }
  int64_t count(int64_t column) const {
    return std::min(kBlock, width - column % columns_per_row * kBlock);
  }
  // The column's neurons in copy c, as a Block of the layout.
  Block at(const Layout& l, int64_t column, int64_t c) const {
    const int64_t n0 = c * block + first(column);
    return {n0 / l.inner, n0 % l.inner, count(column)};
  }
};

template <SurrogateKind kKind>
ffi::Error cpu_backward(ffi::ThreadPool pool, const BackwardCall& call) {
  const BackwardSettings& s = call.settings;
  const Layout& l = call.layout;
  bool param_grads = false;
  for (void* grad : call.param_grads.values) param_grads |= grad != nullptr;
  const CopyWork work(l, param_grads ? call.param_grads.count : l.neurons());
  const bool known_dtype = dispatch_dtype<CpuDType>(call.input_dtype, [&]<typename D>() {
    using X = typename D::Input;
    using S = typename D::State;
    const auto shared = QifParams<S>::template backward<kKind>(s);
    // Each group's gradients, where there is more than one group (few columns: a small block).
    std::vector<S> partial(work.groups > 1 ? work.groups * kNumParams * work.block : 0);
    auto grads_of = [&](int64_t group, S* grads[kNumParams]) {
      for (int j = 0; j < kNumParams; ++j) {
        S* const grad = static_cast<S*>(call.param_grads.values[j]);
        grads[j] = !grad || partial.empty()
                       ? grad
                       : partial.data() + (group * kNumParams + j) * work.block;
      }
    };
    bool_switch([&]<bool kHardReset, bool kPerNeuron, bool kParamGrads>() {
      if constexpr (kPerNeuron || !kParamGrads) {  // (gradients only of arrays)
        parallel_blocks(pool, work.tasks(), [&](int64_t index) {
          const int64_t column = index % work.columns, group = index / work.columns;
          BlockParams<S, kPerNeuron> params(shared, call.params, s.neuron);
          // (every parameter array tiles the block: each copy's neurons take the same values)
          params.load(work.at(l, column, 0), l);
          BlockGradSums<S, kParamGrads> sums;
          const int64_t c_end = std::min(work.copies, (group + 1) * work.copies_per_group);
          for (int64_t c = group * work.copies_per_group; c < c_end; ++c) {
            run_block<backward_block<kKind, kHardReset, kPerNeuron, kParamGrads, X, S>>(
                call, work.at(l, column, c), params, sums);
          }
          if constexpr (kParamGrads) {
            S* grads[kNumParams];
            grads_of(group, grads);
            write_param_grads(sums, params, grads, work.first(column), work.count(column));
          }
        });
      }
    }, s.neuron.hard_reset, call.params.any(), param_grads);
    // The groups' gradients added up, in group order.
    for (int j = 0; j < kNumParams && !partial.empty(); ++j) {
      S* const grad = static_cast<S*>(call.param_grads.values[j]);
      if (!grad) continue;
      for (int64_t k = 0; k < work.block; ++k) {
        S total = S(0);
        for (int64_t g = 0; g < work.groups; ++g) {
          total += partial[(g * kNumParams + j) * work.block + k];
        }
        grad[k] = total;
      }
    }
  });
  if (!known_dtype) return no_kernel("dtype", static_cast<int64_t>(call.input_dtype));
  return ffi::Error::Success();
}

#define JAXQIF_CPU_BACKWARD_INSTANCE(PREFIX, NAME, ID) \
  PREFIX template ffi::Error cpu_backward<SurrogateKind::k##NAME>(ffi::ThreadPool, const BackwardCall&);

}  // namespace jaxqif
