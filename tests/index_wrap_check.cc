// IndexWrap's multiply-and-shift modulo (qif_buffers.h, wrap_index in qif_math.h) against the %
// operator: every divisor below 5000, those around each power of two, 2000 random ones up to
// 2^31, and some beyond (which divide); numerators from 0 to 3000, around multiples of the
// divisor, around 2^31 and random. Built and run by tests/test_index_wrap.py; exit code 0: all
// agree.
#include <cstdio>
#include <initializer_list>
#include <random>
#include <vector>

#include "qif_math.h"

int main() {
  using jaxqif::IndexWrap;
  std::mt19937_64 rng(1);
  std::vector<int64_t> divisors;
  for (int64_t d = 1; d < 5000; ++d) divisors.push_back(d);
  for (int s = 12; s < 34; ++s) {
    for (int64_t d : {(int64_t(1) << s) - 1, int64_t(1) << s, (int64_t(1) << s) + 1}) {
      divisors.push_back(d);
    }
  }
  for (int i = 0; i < 2000; ++i) divisors.push_back(1 + rng() % (IndexWrap::kFastLimit - 1));
  long checks = 0, wrong = 0;
  for (int64_t d : divisors) {
    const IndexWrap wrap(d);
    auto check = [&](int64_t n) {
      ++checks;
      if (jaxqif::wrap_index(n, wrap) != n % d && wrong++ < 5) {
        std::printf("wrong: %lld %% %lld\n", static_cast<long long>(n), static_cast<long long>(d));
      }
    };
    for (int64_t n = 0; n < 3000; ++n) check(n);
    for (int64_t n : {d - 1, d, d + 1, 2 * d - 1, 7 * d + 3, IndexWrap::kFastLimit - 2,
                      IndexWrap::kFastLimit - 1, IndexWrap::kFastLimit, int64_t(1) << 40}) {
      check(n);
    }
    for (int i = 0; i < 1000; ++i) check(static_cast<int64_t>(rng() % IndexWrap::kFastLimit));
  }
  std::printf("%ld checks, %ld wrong\n", checks, wrong);
  return wrong == 0 ? 0 : 1;
}
