// A 128-bit hash of one page, by which an incremental snapshot tells a page
// unchanged since the capsule it builds on (docs/SNAPSHOTS.md, incremental
// capsules): two pages with equal hashes are taken as equal, so the hash
// must make a false match negligible (two independent 64-bit halves: about
// 2^-128 per compared page for pages that differ, were the halves ideal).
//
// Four lanes of multiply-rotate rounds over 8-byte words, then a final mix
// of each half; one pass over the page at memory speed.  No allocation, no
// C library: it runs in the snapshot writer child.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mmtier::detail {

struct page_digest {
  uint64_t lo, hi;
  bool operator==(const page_digest &o) const { return lo == o.lo && hi == o.hi; }
};

// n must be a multiple of 32 (a page is).
page_digest page_hash(const void *data, size_t n);

}  // namespace mmtier::detail
