// Allocator engine: jemalloc (Debian's libjemalloc_pic.a with its exported
// names renamed to mmtier_je_*, see cmake/rename_jemalloc.sh) running on
// memory that the heap layer provides through jemalloc's extent hooks.  The
// per-object fast paths are jemalloc's own; the tier decision happens only
// when an extent's pages are committed, once per unit.
#pragma once

#include <cstddef>

// Declared hidden: the engine is linked into the same library, so calls are
// direct (no PLT) and the names never reach the dynamic symbol table.
#pragma GCC visibility push(hidden)
extern "C" {
void *mmtier_je_malloc(size_t size);
void *mmtier_je_calloc(size_t n, size_t size);
void *mmtier_je_realloc(void *p, size_t size);
void mmtier_je_free(void *p);
int mmtier_je_posix_memalign(void **out, size_t align, size_t size);
void *mmtier_je_aligned_alloc(size_t align, size_t size);
size_t mmtier_je_malloc_usable_size(void *p);
void *mmtier_je_mallocx(size_t size, int flags);
void *mmtier_je_rallocx(void *p, size_t size, int flags);
void mmtier_je_dallocx(void *p, int flags);
void mmtier_je_sdallocx(void *p, size_t size, int flags);
size_t mmtier_je_sallocx(const void *p, int flags);
int mmtier_je_mallctl(const char *name, void *oldp, size_t *oldlenp, void *newp, size_t newlen);
}
#pragma GCC visibility pop

namespace mmtier::detail {

// jemalloc's flag encodings (stable API, jemalloc_macros.h).
inline constexpr int je_align_flag(size_t align) { return __builtin_ctzl(align); }
inline constexpr int je_arena_flag(unsigned arena) { return static_cast<int>((arena + 1) << 20); }
inline constexpr int kJeZero = 0x40;
inline constexpr int kJeTcacheNone = 0x100 /* MALLOCX_TCACHE_NONE = (-1 + 2) << 8 */;
inline constexpr int je_tcache_flag(unsigned tc) { return static_cast<int>((tc + 2) << 8); }

// Installs the extent hooks on every automatic arena and creates one arena
// per tier for explicit placement.  Returns false if jemalloc refused.
[[nodiscard]] bool engine_init();

// Arena whose memory always lives on tier t (made on first use).
unsigned engine_tier_arena(int t);

// A thread's first allocation from the small-object heaps: binds the
// thread to one of the engine's arenas, one per CPU, made with the heap's
// hooks on first use (jemalloc's own automatic arenas beyond arena 0 would
// be made with its default hooks; it has only arena 0).
void engine_thread_start();

// Flags for an allocation that must come from tier t's arena: the arena and
// a thread cache of this thread's that only that arena fills (created on
// first use, destroyed when the thread exits), so explicit placement keeps a
// cached fast path.  Falls back to no cache if none can be created.
int engine_tier_flags(int t);
inline constexpr int kJeArenaMask = static_cast<int>(0xfff00000u);

// Whether the heap's extent hooks are in place on every arena.
bool engine_hooks_installed();

}  // namespace mmtier::detail
