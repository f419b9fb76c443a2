// Platform layer: the one reader of /proc/self/pagemap, the kernel's view of
// which pages are present and whether a page is anonymous (a copy-on-write
// copy after fork) or a page of a file.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mmtier::detail::sys {

inline constexpr uint64_t kPagemapPresent = uint64_t{1} << 63;
inline constexpr uint64_t kPagemapSwapped = uint64_t{1} << 62;
inline constexpr uint64_t kPagemapFile = uint64_t{1} << 61;  // file-backed or shared anonymous
inline constexpr uint64_t kPagemapExclusive = uint64_t{1} << 56;

struct page_info {
  bool present;
  bool file;       // file-backed or shared-anonymous page
  bool swapped;    // not present: in swap (an anonymous page's data is there)
  bool exclusive;  // mapped by this process only
};

// Of a page of a MAP_PRIVATE file mapping: whether it is surely a private
// copy (an anonymous page written since the mapping was made).  A page of
// a DAX file has no page cache behind it: pagemap shows it present but
// neither file nor exclusive, as it shows an anonymous copy that a fork
// child shares; on DAX only an exclusive one is surely a copy.
inline bool private_copy(const page_info &i, bool dax) { return i.present && !i.file && (i.exclusive || !dax); }
// On DAX, a page that is either the file's own or a copy a fork child
// shares: only its contents can tell.
inline bool file_or_copy(const page_info &i, bool dax) { return dax && i.present && !i.file && !i.exclusive; }

// Entries of pages [addr, addr + pages * 4 KiB) through fd (an open
// /proc/self/pagemap); false if they could not all be read.
[[nodiscard]] bool pagemap_entries(int fd, uintptr_t addr, size_t pages, uint64_t *out);

// One-shot: opens the file, reads, closes.  For callers on rare paths that
// hold no lock (tier queries of units frozen by fork).
[[nodiscard]] bool pagemap_read(uintptr_t addr, size_t pages, page_info *out);

// A descriptor kept open for frequent reads (the sampler reads one entry
// per sampled page): guarded against the application's close (fd_guard.h)
// and reopened when the process is not the one that opened it (a fork
// child's inherited descriptor reads its parent's address space).  Not
// thread-safe: its owner serialises the calls.
class pagemap_file {
 public:
  constexpr pagemap_file() = default;
  // The entry of the page at addr, 0 when unreadable.
  uint64_t entry(uintptr_t addr);
  bool info(uintptr_t addr, size_t pages, page_info *out);
  // How many of pages [addr, addr + pages * 4 KiB) are present; 0 when
  // unreadable.
  size_t present(uintptr_t addr, size_t pages);
  // Whether [addr, addr + len) is mapped by huge pages only (a transparent
  // huge page mapped whole by one page-table entry: PAGEMAP_SCAN's
  // PAGE_IS_HUGE, Linux 6.7): 1 yes, 0 no, -ENOTTY when the kernel cannot
  // tell (older kernels; asked once, then answered without a call).
  int huge(uintptr_t addr, size_t len);
  // Closes the descriptor if this process did not open it.
  void check_owner();
  // Closes the descriptor (opened again at the next use).  The heap's
  // reader lives as long as the process; a reader of a shorter life (a
  // test's) closes it when done.
  void close();
  // In a restored process: the descriptor does not exist (nothing closed).
  void forget() { fd_ = -1; }

 private:
  bool ready();
  int fd_ = -1;
  long pid_ = 0;
};

}  // namespace mmtier::detail::sys
