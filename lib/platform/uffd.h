// userfaultfd, issued directly (see sys.h): the one kernel mechanism that
// lets mmtier hold off an access to a page, including an access made by the
// kernel inside a system call, without a signal and without failing the
// call.  Used to sample accesses to anonymous (DRAM) units and to move units
// between tiers while the application runs.  Each call returns >= 0 or
// -errno.
#pragma once

#include <linux/userfaultfd.h>

#include <cstddef>
#include <cstdint>

// Newer than the build system's kernel headers may be (values from the
// kernel's uapi; the running kernel says whether it has them).
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_MOVE (1 << 16)
#endif
#ifndef _UFFDIO_MOVE
#define _UFFDIO_MOVE (0x05)
struct uffdio_move {
  __u64 dst;
  __u64 src;
  __u64 len;
  __u64 mode;
  __s64 move;
};
#define UFFDIO_MOVE _IOWR(UFFDIO, _UFFDIO_MOVE, struct uffdio_move)
#endif

namespace mmtier::detail::sys::uffd {

// A userfaultfd for this process (close-on-exec, blocking reads), trying the
// device node /dev/userfaultfd (Linux 6.1) when the system call is not
// allowed to unprivileged processes (vm.unprivileged_userfaultfd=0).  fd, or
// -errno: -EPERM when the system call refused and there is no device, the
// device's error (-EACCES: not open to this user) otherwise.
long open();

// The features this kernel offers (negotiated on a throwaway descriptor:
// the API can be negotiated only once per descriptor); 0 if none, with
// *err (when given) open()'s error.
uint64_t features(long *err = nullptr);
// Negotiates the API with exactly the features wanted; the descriptor must
// not be used if this fails.
long api(int fd, uint64_t want);

long register_range(int fd, void *addr, size_t len, uint64_t mode);
long unregister_range(int fd, void *addr, size_t len);
// Copies len bytes from src into the missing pages at dst; *done gets the
// bytes copied (also on -EEXIST, where a page already existed).
long copy(int fd, void *dst, const void *src, size_t len, size_t *done);
// The same, the pages copied in write-protected (UFFDIO_COPY_MODE_WP).
long copy_protected(int fd, void *dst, const void *src, size_t len, size_t *done);
long zeropage(int fd, void *dst, size_t len);
// Moves the pages at src (anonymous, present, exclusive) to the missing
// pages at dst; *done gets the bytes moved.
long move(int fd, void *dst, void *src, size_t len, size_t *done);
// Write-protects (or not) [addr, addr + len); a range the kernel holds in
// several mappings is done in parts where one call covers only one (before
// Linux 6.3).
long write_protect(int fd, void *addr, size_t len, bool protect);
long wake(int fd, void *addr, size_t len);

}  // namespace mmtier::detail::sys::uffd
