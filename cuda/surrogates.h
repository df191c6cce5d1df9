// The surrogate gradients the kernels know, in one list. Each entry X(Name, id) generates the
// SurrogateKind enumerator kName = id, counts towards kNumSurrogates, is a case of
// dispatch_surrogate_reset (static_switch.h), declares the backward's instances
// (launch/backward_launch.h) and, read by CMakeLists.txt, gets its own backward translation
// unit. The id is the kernel_id of the surrogate's class in jaxqif/surrogate.py: 0, 1, ... in
// this order.
//
// Adding a surrogate: a line here, its SurrogateTraits in qif_math.h (constants and gradient),
// and its class in jaxqif/surrogate.py (see cuda/README.md).
#pragma once

#include "std_headers.h"

// Keep one entry per line, as `  X(Name, id)`: CMakeLists.txt reads the names from these lines.
#define JAXQIF_SURROGATES(X) \
  X(Sigmoid, 0)              \
  X(ATan, 1)                 \
  X(PiecewiseQuadratic, 2)   \
  X(PiecewiseExp, 3)         \
  X(SoftSign, 4)             \
  X(SuperSpike, 5)           \
  X(Erf, 6)

namespace jaxqif {

enum class SurrogateKind : int64_t {
#define JAXQIF_SURROGATE_ENUMERATOR(NAME, ID) k##NAME = ID,
  JAXQIF_SURROGATES(JAXQIF_SURROGATE_ENUMERATOR)
#undef JAXQIF_SURROGATE_ENUMERATOR
};

namespace internal {
constexpr int64_t kSurrogateIds[] = {
#define JAXQIF_SURROGATE_ID(NAME, ID) ID,
    JAXQIF_SURROGATES(JAXQIF_SURROGATE_ID)
#undef JAXQIF_SURROGATE_ID
};
constexpr bool surrogate_ids_in_order() {
  int64_t expected = 0;
  for (int64_t id : kSurrogateIds) {
    if (id != expected++) return false;
  }
  return true;
}
}  // namespace internal

// The enumerator's name without its k: "Sigmoid", ... (nullptr for an id not in the list).
constexpr const char* surrogate_name(SurrogateKind kind) {
  switch (kind) {
#define JAXQIF_SURROGATE_NAME(NAME, ID) \
  case SurrogateKind::k##NAME:          \
    return #NAME;
    JAXQIF_SURROGATES(JAXQIF_SURROGATE_NAME)
#undef JAXQIF_SURROGATE_NAME
  }
  return nullptr;
}

constexpr int64_t kNumSurrogates =
    static_cast<int64_t>(sizeof(internal::kSurrogateIds) / sizeof(internal::kSurrogateIds[0]));
static_assert(internal::surrogate_ids_in_order(),
              "JAXQIF_SURROGATES: the ids must be 0, 1, ... in the list's order");

}  // namespace jaxqif
