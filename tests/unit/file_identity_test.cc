// The content identity of mapped files (snapshot/file_identity.h): the
// GNU build id of an ELF file as the kernel loaded it, the ends CRC of
// other files, and what each does and does not see.
#include "snapshot/file_identity.h"

#include <gtest/gtest.h>

#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

namespace {

namespace snap = mmtier::snapshot;

struct fd_reader {
  int fd;
  long operator()(void *buf, uint64_t n, uint64_t off) const {
    return static_cast<long>(pread(fd, buf, n, static_cast<off_t>(off)));
  }
};

// This program's build id as the loader mapped it (its PT_NOTE in memory).
std::vector<uint8_t> own_build_id_in_memory() {
  std::vector<uint8_t> id;
  dl_iterate_phdr(
      [](dl_phdr_info *info, size_t, void *out) {
        auto &v = *static_cast<std::vector<uint8_t> *>(out);
        if (info->dlpi_name && info->dlpi_name[0]) return 0;  // the main program has an empty name
        for (int i = 0; i < info->dlpi_phnum; ++i) {
          const ElfW(Phdr) &ph = info->dlpi_phdr[i];
          if (ph.p_type != PT_NOTE) continue;
          const char *p = reinterpret_cast<const char *>(info->dlpi_addr + ph.p_vaddr);
          const char *end = p + ph.p_memsz;
          const size_t a = ph.p_align == 8 ? 8 : 4;
          while (p + sizeof(ElfW(Nhdr)) <= end) {
            const auto *n = reinterpret_cast<const ElfW(Nhdr) *>(p);
            const char *name = p + sizeof *n;
            const char *desc = name + ((n->n_namesz + a - 1) & ~(a - 1));
            if (n->n_type == NT_GNU_BUILD_ID && n->n_namesz == 4 && !memcmp(name, "GNU", 4)) {
              v.assign(desc, desc + n->n_descsz);
              return 1;
            }
            p = desc + ((n->n_descsz + a - 1) & ~(a - 1));
          }
        }
        return 0;
      },
      &id);
  return id;
}

std::string temp_file(const std::vector<char> &bytes) {
  char path[] = "/tmp/mmtier-identity-XXXXXX";
  const int fd = mkstemp(path);
  EXPECT_GE(fd, 0);
  EXPECT_EQ(write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  close(fd);
  return path;
}

bool identify_path(const std::string &path, uint64_t size, mmtier::capsule::file *f) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  memset(f, 0, sizeof *f);
  f->size = size;
  fd_reader r{fd};
  std::vector<char> scratch(snap::kIdentityEnds);
  const bool ok = snap::identify(r, *f, scratch.data(), scratch.size());
  close(fd);
  return ok;
}

TEST(FileIdentity, AnElfFileIsKnownByTheBuildIdTheLoaderSees) {
  const std::vector<uint8_t> want = own_build_id_in_memory();
  ASSERT_FALSE(want.empty()) << "the test program has no build id";
  char exe[4096];
  const ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  ASSERT_GT(n, 0);
  exe[n] = 0;
  struct stat st;
  ASSERT_EQ(stat(exe, &st), 0);
  mmtier::capsule::file f;
  ASSERT_TRUE(identify_path(exe, static_cast<uint64_t>(st.st_size), &f));
  EXPECT_EQ(f.identity, static_cast<uint32_t>(mmtier::capsule::file_identity::build_id));
  ASSERT_EQ(f.build_id_len, want.size());
  EXPECT_EQ(std::vector<uint8_t>(f.build_id, f.build_id + f.build_id_len), want);
}

TEST(FileIdentity, AnotherFileIsKnownByItsEnds) {
  // 200 KiB: the CRC covers the first and last 64 KiB.
  std::vector<char> bytes(200 << 10);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 7 + 3);
  auto crc_of = [](const std::vector<char> &b) {
    const std::string p = temp_file(b);
    mmtier::capsule::file f;
    EXPECT_TRUE(identify_path(p, b.size(), &f));
    EXPECT_EQ(f.identity, static_cast<uint32_t>(mmtier::capsule::file_identity::ends));
    unlink(p.c_str());
    return f.crc;
  };
  const uint32_t base = crc_of(bytes);
  for (size_t at : {size_t{0}, bytes.size() - 1, size_t{(64 << 10) - 1}, bytes.size() - (64 << 10)}) {
    std::vector<char> b = bytes;
    b[at] ^= 1;
    EXPECT_NE(crc_of(b), base) << "a byte at " << at;
  }
  // The middle is not read: a change there is what the size and the
  // modification time must tell.
  std::vector<char> mid = bytes;
  mid[100 << 10] ^= 1;
  EXPECT_EQ(crc_of(mid), base);
  // A small file is read whole, once.
  std::vector<char> small(1000, 'x');
  std::vector<char> small2 = small;
  small2[500] = 'y';
  EXPECT_NE(crc_of(small), crc_of(small2));
  EXPECT_EQ(crc_of(small), mmtier::detail::crc32c(0, small.data(), small.size()));
}

TEST(FileIdentity, AShortOrUnreadableFileIsNotIdentified) {
  // The size recorded is larger than the file: a short read.
  const std::string p = temp_file(std::vector<char>(100, 'a'));
  mmtier::capsule::file f;
  EXPECT_FALSE(identify_path(p, 5000, &f));
  unlink(p.c_str());
  // An ELF header with no program headers: no build id, known by its ends.
  std::vector<char> elf(64, 0);
  memcpy(elf.data(), "\177ELF\2\1", 6);
  const std::string q = temp_file(elf);
  ASSERT_TRUE(identify_path(q, elf.size(), &f));
  EXPECT_EQ(f.identity, static_cast<uint32_t>(mmtier::capsule::file_identity::ends));
  unlink(q.c_str());
}

}  // namespace
