// The option name a mistyped one was most likely meant as (config.h).
#include "config/config.h"

#include <cstring>

namespace mmtier::detail {
namespace {

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

}  // namespace

const char *closest_option(const char *name) {
  // Optimal-string-alignment distance (Levenshtein plus adjacent
  // transpositions), case-insensitive, with three rolling rows.
  constexpr size_t kMaxDistance = 3;
  constexpr size_t kCols = 64;
  size_t n = strlen(name);
  const char *best = nullptr;
  size_t best_dist = kMaxDistance + 1;
  size_t count = 0;
  const option_info *options = config_options(&count);
  for (size_t k = 0; k < count; k++) {
    const char *o = options[k].name;
    size_t m = strlen(o);
    // Names differing in length by more than the limit cannot be close, and
    // this bounds n by the longest option name plus 3.
    if ((n > m ? n - m : m - n) > kMaxDistance || m + 1 > kCols) continue;
    size_t rows[3][kCols];
    size_t *prev2 = rows[0], *prev = rows[1], *cur = rows[2];
    for (size_t j = 0; j <= m; j++) prev[j] = j;
    for (size_t i = 1; i <= n; i++) {
      cur[0] = i;
      for (size_t j = 1; j <= m; j++) {
        size_t cost = lower(name[i - 1]) == lower(o[j - 1]) ? 0 : 1;
        size_t v = prev[j - 1] + cost;
        if (prev[j] + 1 < v) v = prev[j] + 1;
        if (cur[j - 1] + 1 < v) v = cur[j - 1] + 1;
        if (i > 1 && j > 1 && lower(name[i - 1]) == lower(o[j - 2]) &&
            lower(name[i - 2]) == lower(o[j - 1]) && prev2[j - 2] + 1 < v)
          v = prev2[j - 2] + 1;
        cur[j] = v;
      }
      size_t *t = prev2;
      prev2 = prev;
      prev = cur;
      cur = t;
    }
    if (prev[m] < best_dist) {
      best_dist = prev[m];
      best = o;
    }
  }
  return best;
}

}  // namespace mmtier::detail
