// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of
// snapshot capsules: their manifest, the chunks of their memory file and
// the identities of mapped files.
//
// crc32c() starts and ends with the usual inversion itself, so a CRC can be
// computed in pieces: crc32c(crc32c(0, a, na), b, nb) == crc32c(0, a||b).
// It uses the CPU's instruction when there is one (SSE4.2 on x86-64, chosen
// once at run time; the CRC extension on aarch64, at compile time) and
// slicing-by-8 tables otherwise.
//
// Nothing here allocates, throws or calls the C library but memcpy: it runs
// inside the preloaded malloc before any constructor, in the snapshot
// writer (a fork child) and in the libc-free restorer.  The tables are
// computed at compile time, so there is no initialisation to race with.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mmtier::detail {

uint32_t crc32c(uint32_t crc, const void *data, size_t n);

// The table version, whatever the CPU has (what crc32c() is checked against).
uint32_t crc32c_portable(uint32_t crc, const void *data, size_t n);

// Whether crc32c() uses a CPU instruction.
bool crc32c_hardware();

}  // namespace mmtier::detail
