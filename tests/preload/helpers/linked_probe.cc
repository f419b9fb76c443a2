// Child program linked against libmmtier_api.so (no LD_PRELOAD).  Modes:
//   limit   print "main ran", "secure=S" (AT_SECURE) and "limit0=N"
//           (mmtier_tier_limit(0)); used for the secure-execution checks
//   linked  explicit placement through the linked API and the C++ allocator;
//           prints "linked ok" and exits 0, or names the failed check and
//           exits 1
#include <mmtier/allocator.hpp>
#include <mmtier/mmtier.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <sys/auxv.h>

namespace {

int failures = 0;

void expect(bool ok, const char *what) {
  if (!ok) {
    std::printf("FAILED: %s\n", what);
    ++failures;
  }
}

int linked() {
  // The program keeps its own malloc: glibc memory is not managed.
  void *plain = std::malloc(4096);
  std::memset(plain, 1, 4096);
  expect(mmtier_tier_of(plain) == -1, "tier_of(glibc malloc) == -1");
  std::free(plain);

  for (size_t size : {size_t{64}, size_t{1} << 20, size_t{8} << 20}) {
    for (int tier : {1, 0}) {
      auto *p = static_cast<unsigned char *>(mmtier_malloc_on(tier, size));
      expect(p != nullptr, "mmtier_malloc_on returned memory");
      if (!p) continue;
      std::memset(p, 0x5a, size);
      expect(mmtier_tier_of(p) == tier, tier ? "tier_of(malloc_on(1)) == 1" : "tier_of(malloc_on(0)) == 0");
      expect(mmtier_tier_of(p + size - 1) == tier, "tier_of(last byte) matches");
      expect(mmtier_owns(p) == 1, "mmtier_owns(malloc_on)");
      mmtier_free(p);
    }
  }

  {
    std::vector<int, mmtier::pmem_allocator<int>> v(1 << 20);
    for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<int>(i);
    expect(mmtier_tier_of(v.data()) == 1, "tier_of(vector<pmem_allocator>.data()) == 1");
    expect(mmtier_tier_of(v.data() + v.size() - 1) == 1, "tier_of(pmem vector end) == 1");
    long long sum = 0;
    for (int x : v) sum += x;
    expect(sum == (long long)(1 << 20) * ((1 << 20) - 1) / 2, "pmem vector contents");
  }
  {
    std::vector<int, mmtier::dram_allocator<int>> v(1 << 20, 7);
    expect(mmtier_tier_of(v.data()) == 0, "tier_of(vector<dram_allocator>.data()) == 0");
  }
  if (failures) return 1;
  std::printf("linked ok\n");
  return 0;
}

}  // namespace

int main(int argc, char **argv) {
  if (argc >= 2 && std::strcmp(argv[1], "limit") == 0) {
    std::printf("main ran\nsecure=%lu\nlimit0=%zu\n", getauxval(AT_SECURE), mmtier_tier_limit(0));
    return 0;
  }
  if (argc >= 2 && std::strcmp(argv[1], "linked") == 0) return linked();
  std::fprintf(stderr, "usage: linked_probe limit | linked\n");
  return 64;
}
