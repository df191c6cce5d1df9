// Runtime bools as template arguments, in the manner of FlashAttention's BOOL_SWITCH:
//
//   bool_switch([&]<bool kHardReset, bool kVSeq>() { run(kernel<kHardReset, kVSeq>); },
//               hard_reset, v_seq != nullptr);
//
// compiles the body once for each of the 2^n combinations and runs the one that the values
// pick, returning what it returns.
// Host code, plain C++: the CPU handler uses it too.
#pragma once

#include <concepts>

namespace jaxqif {

template <bool... kFlags, typename Fn>
decltype(auto) bool_switch(Fn&& fn) {
  return fn.template operator()<kFlags...>();
}

template <bool... kFlags, typename Fn, std::same_as<bool>... Rest>
decltype(auto) bool_switch(Fn&& fn, bool flag, Rest... rest) {
  if (flag) return bool_switch<kFlags..., true>(fn, rest...);
  return bool_switch<kFlags..., false>(fn, rest...);
}

}  // namespace jaxqif
