// Runtime bools as template arguments, in the manner of FlashAttention's BOOL_SWITCH:
//
//   bool_switch([&]<bool kHardReset, bool kVSeq>() { run(kernel<kHardReset, kVSeq>); },
//               hard_reset, v_seq != nullptr);
//
// compiles the body once for each of the 2^n combinations and runs the one that the values
// pick, returning what it returns; dispatch_surrogate_reset does the same for a surrogate id.
// Host code, plain C++: the CPU handler uses it too.
#pragma once

#include <concepts>
#include <cstdint>

#include "surrogates.h"

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

// Calls fn.template operator()<kKind>() with the runtime surrogate id as a template argument and
// returns true; for an id not in the list returns false and calls nothing (the handlers refuse
// such ids before they dispatch: false is an internal error).
template <typename Fn>
bool dispatch_surrogate(int64_t surrogate, Fn&& fn) {
  switch (surrogate) {
#define JAXQIF_SURROGATE_CASE(NAME, ID)                 \
  case ID:                                              \
    fn.template operator()<SurrogateKind::k##NAME>();   \
    return true;
    JAXQIF_SURROGATES(JAXQIF_SURROGATE_CASE)
#undef JAXQIF_SURROGATE_CASE
  }
  return false;
}

// The same with the reset mode too: fn.template operator()<kKind, kHardReset>(), so each kernel
// is compiled once per surrogate and reset mode.
template <typename Fn>
bool dispatch_surrogate_reset(int64_t surrogate, bool hard_reset, Fn&& fn) {
  return dispatch_surrogate(surrogate, [&]<SurrogateKind kKind>() {
    bool_switch([&]<bool kHardReset>() { fn.template operator()<kKind, kHardReset>(); },
                hard_reset);
  });
}

}  // namespace jaxqif
