/* mmtier public C API.
 *
 * The same functions are exported by libmmtier.so (the LD_PRELOAD library,
 * which also interposes malloc and anonymous mmap) and by libmmtier_api.so
 * (for programs that link against mmtier and keep their own malloc).  A
 * program running under LD_PRELOAD finds them with dlsym(RTLD_DEFAULT, ...).
 *
 * Tiers are small integers: 0 is DRAM, 1 is PMem (the slow, large tier).
 */
#ifndef MMTIER_MMTIER_H
#define MMTIER_MMTIER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(MMTIER_BUILDING)
#define MMTIER_API __attribute__((visibility("default")))
#else
#define MMTIER_API
#endif

enum mmtier_tier {
  MMTIER_TIER_DRAM = 0,
  MMTIER_TIER_PMEM = 1,
  MMTIER_TIER_COUNT = 2
};

/* Tier holding the byte at addr: 0 DRAM, 1 PMem, -1 if mmtier does not
 * manage that address (or it is not mapped). */
MMTIER_API int mmtier_tier_of(const void *addr);

/* Managed bytes now resident on a tier (pages present in memory). */
MMTIER_API size_t mmtier_resident_bytes(int tier);

/* Budget of a tier in bytes, SIZE_MAX if it has none. */
MMTIER_API size_t mmtier_tier_limit(int tier);

/* Explicit placement: memory from these always lives on the given tier
 * (unless that tier is exhausted, in which case the other tier is used and
 * one warning is logged).  Free with mmtier_free.  Return NULL with errno
 * ENOMEM on failure, EINVAL for a bad tier or alignment. */
MMTIER_API void *mmtier_malloc_on(int tier, size_t size);
MMTIER_API void *mmtier_calloc_on(int tier, size_t count, size_t size);
MMTIER_API void *mmtier_aligned_alloc_on(int tier, size_t alignment, size_t size);

/* Policy placement, as the interposed malloc does. */
MMTIER_API void *mmtier_malloc(size_t size);
MMTIER_API void *mmtier_realloc(void *ptr, size_t size);
MMTIER_API void mmtier_free(void *ptr);
MMTIER_API size_t mmtier_usable_size(const void *ptr);

/* Whether ptr was allocated by mmtier's heap (any tier). */
MMTIER_API int mmtier_owns(const void *ptr);

struct mmtier_stats {
  size_t unit_size;                          /* bytes per unit of placement */
  size_t units[MMTIER_TIER_COUNT];           /* units placed on each tier now */
  size_t peak_units[MMTIER_TIER_COUNT];      /* most units on each tier at once */
  size_t resident_bytes[MMTIER_TIER_COUNT];  /* pages present now */
  size_t limit_bytes[MMTIER_TIER_COUNT];     /* budget, SIZE_MAX if none */
  size_t fallbacks;                          /* placements that went to the other tier */
  size_t mapped_mmap_bytes;                  /* managed anonymous mmap bytes */
  size_t forks;                              /* fork()s that froze file-backed units */
};

/* Fills *out; returns 0, or -1 with errno set. */
MMTIER_API int mmtier_get_stats(struct mmtier_stats *out);

/* Moves the managed memory of [addr, addr + len) to a tier now, whole
 * 2 MiB units at a time (every unit the range touches), at the same
 * addresses, while other threads keep using it.  Units that cannot move
 * (placed with a forced tier, frozen by fork, with pages of a protection
 * other than read/write) are left where they are.  Returns the bytes
 * copied (0 when everything was already there), or -1 with errno: EINVAL
 * (bad tier, or nothing managed in the range), ENOSPC (the tier's limit is
 * reached), EOPNOTSUPP (userfaultfd unavailable). */
MMTIER_API long mmtier_move(const void *addr, size_t len, int tier);

/* Background promotion and demotion (the mover thread "mmtier-bg" and the
 * fault service "mmtier-uffd").  The caller sets size to
 * sizeof(struct mmtier_tiering_stats); fields a library does not know stay
 * as they were, so the struct can grow. */
#define MMTIER_HEAT_BUCKETS 8
struct mmtier_tiering_stats {
  size_t size;                  /* in: sizeof(struct mmtier_tiering_stats) */
  int running;                  /* the mover thread runs */
  uint64_t scan_interval_ns;    /* MMTIER_SCAN_INTERVAL */
  uint64_t scans;               /* scans done */
  uint64_t promotions;          /* units moved PMem -> DRAM */
  uint64_t demotions;           /* units moved DRAM -> PMem */
  uint64_t migrations_failed;   /* moves attempted that left the unit where it was */
  uint64_t bytes_migrated;      /* bytes copied by promotions and demotions */
  uint64_t samples;             /* pages watched for an access */
  uint64_t samples_touched;     /* of which touched within their window */
  uint64_t tracking_faults;     /* page faults answered by the fault service */
  uint64_t cpu_ns;              /* CPU time of both background threads */
  uint64_t dram_budget_bytes;   /* DRAM budget of the last scan, UINT64_MAX: none */
  uint64_t heat_histogram[MMTIER_HEAT_BUCKETS]; /* units by heat, bucket i: [i/8, (i+1)/8) */
  uint64_t map_count_holds;     /* scans whose migrations were held back: the process was
                                   within an eighth of vm.max_map_count (see the README) */
  /* migrations_failed by reason: the errno of each of the first four
   * distinct reasons (0: unused) with its count, and the rest together. */
  int32_t failed_errno[4];
  uint64_t failed_count[4];
  uint64_t failed_other;
  /* Fork.  fork() freezes the process's PMem units (each side keeps its own
   * view); pages written since are anonymous copies in DRAM until the mover
   * re-shares the unit on PMem.  frozen_bytes: units frozen now (placed on
   * PMem); frozen_copied_bytes: their copies in DRAM, as of the last
   * measurement of resident bytes (mmtier_get_stats, mmtier_report, the
   * mover's).  reshares: units re-shared, reshare_bytes copied for it;
   * reshare_stops: moments every other thread was stopped for it, the
   * longest reshare_pause_max_ns; reshare_stop_refusals: stops given up (a
   * thread did not stop in time); reshare_failed: other failures. */
  uint64_t frozen_bytes;
  uint64_t frozen_copied_bytes;
  uint64_t reshares;
  uint64_t reshare_bytes;
  uint64_t reshare_stops;
  uint64_t reshare_pause_max_ns;
  uint64_t reshare_stop_refusals;
  uint64_t reshare_failed;
};

/* Fills *out (out->size must be set); returns 0, or -1 with errno EINVAL. */
MMTIER_API int mmtier_get_tiering_stats(struct mmtier_tiering_stats *out);

/* Writes a human-readable report of where memory went to fd. */
MMTIER_API int mmtier_report(int fd);

/* Snapshots: a capsule holding the whole process as of one instant (every
 * thread stopped together for the pause; the program runs on while a child
 * process writes the capsule).  See docs/SNAPSHOTS.md.
 *
 * mmtier_snapshot takes one into the directory MMTIER_SNAPSHOT_DIR (default
 * $XDG_STATE_HOME/mmtier/capsules), named NAME.mmtcap; NAME may be NULL
 * (<command>-<pid>-<UTC time>).  It returns 0 once the capsule is complete
 * and synced to stable storage, or -1 with errno: EBUSY (a snapshot of this
 * process is under way), EEXIST (the name is taken), EINVAL (a name other
 * than 1 to 64 of A-Z a-z 0-9 . _ -, not starting with a dot), ENOENT (no
 * directory configured), EAGAIN (a thread blocks the stop signal),
 * EOPNOTSUPP (something a capsule cannot hold: a MADV_DONTFORK mapping), or
 * the file system's error; one line on stderr says why, and nothing is left
 * behind.  Not async-signal-safe.
 *
 * Like fork, it returns twice: a process restored from the capsule
 * (`mmtier restore`) resumes inside this call, which then returns
 * MMTIER_SNAPSHOT_RESTORED. */
#define MMTIER_SNAPSHOT_RESTORED 1
MMTIER_API int mmtier_snapshot(const char *name);

/* The same into DIR (NULL: the configured directory); the capsule's path
 * into path[cap] when path is not NULL. */
MMTIER_API int mmtier_snapshot_to(const char *dir, const char *name, char *path, size_t cap);

#ifdef __cplusplus
}
#endif

#endif /* MMTIER_MMTIER_H */
