// errno names and the failure tally (see errors.h).
#include "support/errors.h"

#include "support/log.h"

#include <cerrno>

namespace mmtier::detail {

const char *errno_name(long err, char buf[24]) {
  if (err < 0) err = -err;
  switch (err) {
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case ESRCH: return "ESRCH";
    case EINTR: return "EINTR";
    case EIO: return "EIO";
    case E2BIG: return "E2BIG";
    case EBADF: return "EBADF";
    case EAGAIN: return "EAGAIN";
    case ENOMEM: return "ENOMEM";
    case EACCES: return "EACCES";
    case EFAULT: return "EFAULT";
    case EBUSY: return "EBUSY";
    case EEXIST: return "EEXIST";
    case ENODEV: return "ENODEV";
    case EINVAL: return "EINVAL";
    case ENFILE: return "ENFILE";
    case EMFILE: return "EMFILE";
    case EFBIG: return "EFBIG";
    case ENOSPC: return "ENOSPC";
    case ESPIPE: return "ESPIPE";
    case EROFS: return "EROFS";
    case ERANGE: return "ERANGE";
    case ENOSYS: return "ENOSYS";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case EDQUOT: return "EDQUOT";
    default: format(buf, 24, "errno %ld", err); return buf;
  }
}

const char *kernel_lack_meaning(uint32_t bit) {
  switch (bit) {
    case kLackUserfaultfd:
      return "moves unavailable: no userfaultfd this process may use; memory stays where it was placed";
    case kLackWriteProtect:
      return "demotion unavailable: needs userfaultfd write-protect (Linux 5.7); memory only moves up";
    case kLackWpUnpopulated:
      return "no write-protect of unpopulated pages (Linux 6.4): demotion holds missing pages by fault, "
             "fork copies are re-shared with the threads stopped";
    case kLackMove:
      return "no UFFDIO_MOVE (Linux 6.8): DRAM pages are sampled by write-protect, which sees writes, not reads";
    default: return "an unknown feature";
  }
}

const char *migration_failure_meaning(int err) {
  switch (err < 0 ? -err : err) {
    case EOPNOTSUPP:
      return "the kernel's userfaultfd lacks what this move needs (demotion: write-protection of "
             "anonymous pages, Linux 5.7), or there is no userfaultfd at all";
    case ENOSPC: return "no room on the target tier (its limit, or a full PMem file system)";
    case ENOMEM: return "no memory for the move, or no more mappings (vm.max_map_count)";
    case EBUSY: return "the unit changed under the mover (freed, remapped or frozen by a fork): not an error";
    case EIO: return "a page could not be copied; the unit stays partly on its old tier";
    case EPERM:
    case EACCES: return "userfaultfd refused the range";
    default: return "an unexpected error";
  }
}

bool failure_tally::add(int32_t e) {
  bool first = true;
  for (int32_t &s : seen_) {
    if (s == e) {
      first = false;
      break;
    }
    if (s == 0) {
      s = e;
      break;
    }
  }
  for (int i = 0; i < kMax; ++i) {
    if (err[i] == e || err[i] == 0) {
      err[i] = e;
      ++count[i];
      return first;
    }
  }
  ++other;
  return first;
}

uint64_t failure_tally::total() const {
  uint64_t t = other;
  for (uint64_t c : count) t += c;
  return t;
}

void failure_tally::merge(const failure_tally &o) {
  for (int i = 0; i < kMax; ++i) {
    if (!o.err[i]) continue;
    for (uint64_t k = 0; k < o.count[i]; ++k) add(o.err[i]);
  }
  other += o.other;
}

}  // namespace mmtier::detail
