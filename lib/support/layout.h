// Sizes shared by every layer above the platform: the page and the unit of
// placement (the granule that a tier decision, a migration and a snapshot
// work on; its address never changes when its backing does).
#pragma once

#include <cstddef>
#include <cstdint>

namespace mmtier::detail {

inline constexpr size_t kPageShift = 12;
inline constexpr size_t kPageSize = size_t{1} << kPageShift;
inline constexpr size_t kUnitShift = 21;  // 2 MiB units
inline constexpr size_t kUnitSize = size_t{1} << kUnitShift;
inline constexpr size_t kPagesPerUnit = kUnitSize / kPageSize;
inline constexpr size_t kBitmapWords = kPagesPerUnit / 64;

inline constexpr uintptr_t align_down(uintptr_t v, size_t a) { return v & ~(uintptr_t{a} - 1); }
inline constexpr uintptr_t align_up(uintptr_t v, size_t a) {
  return (v + uintptr_t{a} - 1) & ~(uintptr_t{a} - 1);
}

}  // namespace mmtier::detail
