// The on-disk format of a snapshot capsule (docs/SNAPSHOTS.md §5), shared
// by the capture code, the restorer and the mmtier command, the way
// stats/live_format.h is.  Little-endian, fixed-size records; version 1.
//
//   <dir>/<name>.mmtcap/        0700, owner = the process's euid
//     manifest                  0600  status block | header | table directory | tables
//     mem                       0600  sparse; region data at 4 KiB-aligned offsets
//     pmem-<fileid>.tier        0600  hard links to PMem generation files (ZeroIO)
//     mem-<capsule id>          0600  hard links to earlier capsules' mem files (incremental)
//     files/<n>                 0600  descriptor contents (deleted files, pipe buffers)
//
// The status block is rewritten in place as the capsule progresses
// (incomplete, complete, durable, or failed with the writer's one line); it
// has its own CRC.  The header and the table directory are covered by one
// CRC, each table by its own, and the bytes between the tables are zero:
// every byte of a manifest is checked.  Nothing here allocates or uses the
// C library beyond memcpy/memset: the writer child and the restorer use it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace mmtier::capsule {

constexpr char kMagic[8] = {'M', 'M', 'T', 'C', 'A', 'P', '0', '1'};
constexpr uint32_t kVersion = 3;  // 2: threads carry their resume points, the process its mm layout; 3: descriptors their kernel objects
constexpr uint64_t kAlign = 4096;  // of mem offsets and of the tables in the manifest
constexpr uint64_t kHeaderOffset = 512;  // the header, right after the status block
constexpr char kSuffix[] = ".mmtcap";
constexpr char kManifest[] = "manifest";
constexpr char kMem[] = "mem";
constexpr char kBasePrefix[] = "mem-";  // + 32 hex digits: an earlier capsule's mem, linked (incremental)
// Left by `mmtier restore` in place until the restored program is ready
// (restorer/plan.h kAttemptMarker, the same name): part of a capsule.
constexpr char kAttemptMarker[] = "restore-attempt";

enum class status : uint32_t {
  incomplete = 1,  // being written: never restored
  complete = 2,    // every file written and checksummed, not yet flushed to stable storage
  durable = 3,     // complete and fsync'd
  failed = 4,      // the writer gave up: line says why
};

// Offset 0 of the manifest.
struct status_block {
  char magic[8];
  uint32_t version;
  uint32_t state;     // status
  int32_t error;      // errno of a failure, else 0
  uint32_t crc;       // CRC32C of the block with this field 0
  char line[488];     // NUL-terminated: the writer's last word (failure reason)
};
static_assert(sizeof(status_block) == kHeaderOffset);

// Offset kHeaderOffset.  The char arrays are NUL-terminated.
struct header {
  uint32_t header_size;     // sizeof(header)
  uint32_t ntables;         // entries of the directory that follows the header
  uint32_t crc;             // CRC32C of the header, this field 0, and the directory
  uint32_t reserved1;
  uint8_t capsule_id[16];   // random
  uint64_t created_ns;      // CLOCK_REALTIME at the snapshot instant
  char mmtier_version[16];
  uint8_t lib_build_id[20]; // NT_GNU_BUILD_ID of the library that took it
  uint32_t lib_build_id_len;
  int32_t pid;              // as the process saw it (inside its PID namespace)
  uint32_t nthreads;
  uint64_t starttime;       // /proc/PID/stat field 22, clock ticks since boot
  char boot_id[40];         // /proc/sys/kernel/random/boot_id, NUL-terminated
  uint32_t uid, gid, euid, egid;
  char comm[16];
  uint32_t cmdline_crc;     // CRC32C of argv as the process started (each word and its NUL); 0: unknown
  uint32_t kernel_version_crc;  // of /proc/sys/kernel/version
  char kernel_release[72];      // uname -r
  uint64_t vdso_len, vvar_len;
  uint32_t vdso_crc;
  uint32_t page_size;       // a power of two >= kAlign: the page of regions and runs
  uint64_t xcr0;
  uint32_t cpuid1_ecx, cpuid1_edx, cpuid7_ebx, cpuid7_ecx;
  char glibc_version[16];
  int64_t rseq_offset;
  uint32_t rseq_size;
  uint32_t reserved0;
  uint64_t restore_note_addr;  // where the restorer writes its note in the library's data
  uint64_t mem_size;           // length of the mem file
  uint64_t paused_ns;          // how long every thread was stopped
  uint32_t restore_note_size;  // sizeof the library's restore note (0: older than the lazy restore's field)
  uint32_t reserved2;
  uint64_t pmem_linked;        // bytes of pmem runs: PMem data the capsule links, not copies (ZeroIO)
  uint64_t shared;             // bytes of base runs: data an earlier capsule wrote (incremental)
  uint8_t base_id[16];         // capsule_id of the capsule it was built on, zero for a full one
  uint8_t reserved[24];
};
// The directory follows at kHeaderOffset + sizeof(header): 8-byte aligned.
static_assert(sizeof(header) == 416 && sizeof(header) % 8 == 0);

// The directory: one entry per table, after the header.  Kinds a reader
// does not know are an error in version 1 (a newer writer's capsule).
enum class table_kind : uint32_t {
  regions = 1,
  runs = 2,
  chunks = 3,
  files = 4,
  strings = 5,  // NUL-terminated strings, referenced by offset
  threads = 6,
  fds = 7,
  procstate = 8,
  fd_data = 9,  // bytes: what each descriptor's kind keeps (fd_record::detail)
  signals = 10,  // signal_record: signals pending for the whole process, in order
  timers = 11,   // timer_record: POSIX timers (timer_create), by id
  thread_signals = 12,  // thread_signal_record: signals pending for one thread, in order
  page_hashes = 13,     // page_hash_record: one per page of the mem and base runs, in run order
};
constexpr uint32_t kTableKinds = 13;

struct table_entry {
  uint32_t kind;         // table_kind
  uint32_t record_size;  // sizeof the record (1 for strings)
  uint64_t count;        // records
  uint64_t offset;       // in the manifest, kAlign-aligned
  uint32_t crc;          // CRC32C of count * record_size bytes at offset
  uint32_t reserved;
};
static_assert(sizeof(table_entry) == 32);

enum class region_kind : uint32_t {
  reserve = 1,  // address space held PROT_NONE, nothing in it
  unit = 2,     // an mmtier tier unit
  anon = 3,     // other private anonymous memory
  stack = 4,
  brk = 5,
  file = 6,     // a private file mapping (library, executable, data file)
  vdso = 7,
  vvar = 8,
  stats = 9,    // mmtier's shared statistics page
};

enum region_flags : uint32_t {
  kRegionShared = 1u << 0,
  kRegionGrowsDown = 1u << 1,
};

// Madvise bits from smaps VmFlags.
enum region_madv : uint32_t {
  kMadvHuge = 1u << 0,        // hg
  kMadvNoHuge = 1u << 1,      // nh
  kMadvDontDump = 1u << 2,    // dd
  kMadvWipeOnFork = 1u << 3,  // wf
  kMadvMergeable = 1u << 4,   // mg
  kMadvLocked = 1u << 5,      // lo
};

constexpr uint32_t kNoFile = 0xffffffffu;

struct region {
  uint64_t start, end;   // page-aligned, start < end
  uint32_t prot;         // PROT_*
  uint32_t flags;        // region_flags
  uint32_t kind;         // region_kind
  uint32_t madv;         // region_madv
  uint32_t file;         // index into files, or kNoFile
  uint32_t name;         // offset into strings ([heap], [stack], a path), or 0 for none
                         // (strings usually begin with "", which string_at gives for 0 anyway)
  uint64_t file_offset;  // of a file mapping
  uint64_t first_run;    // index into runs
  uint64_t nruns;
};
static_assert(sizeof(region) == 64);

enum class run_source : uint32_t {
  hole = 1,  // never touched: nothing saved (anonymous zero, or the file's content)
  mem = 2,   // bytes in mem at offset
  pmem = 3,  // bytes in the PMem generation file `file` at offset (ZeroIO)
  file = 4,  // the mapped file's own content (unmodified private file pages)
  zero = 5,  // touched but zero
  base = 6,  // bytes in an earlier capsule's mem file `file` (mem-<id>) at offset: unchanged since
             // that capsule (incremental)
};

// Consecutive pages (of header::page_size) of a region with one source; a
// region's runs cover it exactly, in address order, and the regions' runs
// follow each other in the runs table in the regions' order.
struct run {
  uint64_t page;    // first page, counted from the region's start
  uint64_t npages;  // > 0
  uint32_t source;  // run_source
  uint32_t file;    // for pmem and base: index into files (not read for the other sources)
  uint64_t offset;  // for mem, pmem and base: in mem or in the file, kAlign-aligned
};
static_assert(sizeof(run) == 32);

// A page's 128-bit hash (support/page_hash.h), one per page of the mem and
// base runs in the order of the runs table: what the next incremental
// snapshot compares the process's pages with.
struct page_hash_record {
  uint64_t lo, hi;
};
static_assert(sizeof(page_hash_record) == 16);

// A CRC32C over a stretch of mem (file == kNoFile) or of a referenced file;
// offset kAlign-aligned.
struct chunk {
  uint32_t file;
  uint32_t crc;
  uint64_t offset;
  uint64_t length;
};
static_assert(sizeof(chunk) == 24);
constexpr uint64_t kChunkBytes = 2u << 20;

enum class file_identity : uint32_t {
  build_id = 1,  // size and the ELF GNU build id (snapshot/file_identity.h)
  content = 2,   // CRC32C of the whole file (at most 64 MiB; not written)
  ends = 3,      // size, mtime and CRC32C of the first and last 64 KiB (snapshot/file_identity.h)
  capsule = 4,   // a file of the capsule itself (pmem-<fileid>.tier, mem-<capsule id>)
  inode = 5,     // device, inode, size and mtime only: its content could not be read at the snapshot
};

struct file {
  uint64_t dev, ino, size;
  int64_t mtime_ns;
  uint32_t path;         // offset into strings
  uint32_t identity;     // file_identity
  uint8_t build_id[20];
  uint32_t build_id_len; // <= 20
  uint32_t crc;          // content or ends CRC
  uint32_t reserved;
};
static_assert(sizeof(file) == 72);

// No padding anywhere: every byte a CRC covers is a field the writer set.
static_assert(std::has_unique_object_representations_v<status_block> &&
              std::has_unique_object_representations_v<header> &&
              std::has_unique_object_representations_v<table_entry> &&
              std::has_unique_object_representations_v<region> && std::has_unique_object_representations_v<run> &&
              std::has_unique_object_representations_v<chunk> && std::has_unique_object_representations_v<file>);

// A thread as it was stopped (table threads).  Its registers, signal mask
// and FPU state are also in the stop handler's frame at uc_addr, on the
// thread's own stack in the image, where the restore resumes it.
enum thread_flags : uint32_t {
  kThreadCapturer = 1u << 0,  // took the snapshot (running, not stopped by a signal: uc_addr 0)
  kThreadService = 1u << 1,   // one of mmtier's own (not stopped): a restore starts it only to let it end
};

struct thread_record {
  int32_t tid;
  uint32_t flags;      // thread_flags
  uint64_t fs_base;    // the thread pointer (TLS)
  uint64_t uc_addr;    // the handler's ucontext_t
  uint64_t sigmask;    // blocked signals when it stopped (the capturer: its mask outside the capture)
  uint64_t gregs[23];  // x86-64 general registers as ucontext's gregs (REG_RIP, REG_RSP, ...)
  // Where the thread resumes (platform/resume_point.h, 72 bytes: rbx rbp
  // r12-r15 rsp rip, then mxcsr and the x87 control word): in the stop
  // handler's frame for a stopped thread, in the capture for the capturer.
  uint64_t resume[9];
  uint64_t clear_tid;              // set_tid_address (glibc: &pthread->tid)
  uint64_t robust_head, robust_len;  // set_robust_list
  uint64_t rseq_area;              // rseq registration (0: none)
  uint32_t rseq_len, rseq_sig;
  uint64_t altstack_sp, altstack_size;  // sigaltstack (flags SS_DISABLE: none)
  uint32_t altstack_flags;
  uint32_t reserved;
  char name[16];                   // PR_GET_NAME, NUL-terminated
};
static_assert(sizeof(thread_record) == 368);

// Copies the per-thread kernel state a restore sets again (clear-tid
// address, robust list, rseq registration, alternate stack, name) between
// the records that carry it: the capture's, the capsule's, the plan's.
template <class To, class From>
void copy_thread_state(To &to, const From &from) {
  to.clear_tid = from.clear_tid;
  to.robust_head = from.robust_head;
  to.robust_len = from.robust_len;
  to.rseq_area = from.rseq_area;
  to.rseq_len = from.rseq_len;
  to.rseq_sig = from.rseq_sig;
  to.altstack_sp = from.altstack_sp;
  to.altstack_size = from.altstack_size;
  to.altstack_flags = from.altstack_flags;
  static_assert(sizeof to.name == sizeof from.name);
  memcpy(to.name, from.name, sizeof to.name);
  to.name[sizeof to.name - 1] = 0;
}

// The process's own state (table procstate, one record), as it was in the
// pause: what a restore sets before the program runs again.
struct sigaction_record {
  uint64_t handler;   // SIG_DFL 0, SIG_IGN 1, else the handler's address
  uint64_t flags;     // SA_* as the kernel keeps them (SA_RESTORER included)
  uint64_t restorer;
  uint64_t mask;      // signals blocked while the handler runs
};
static_assert(sizeof(sigaction_record) == 32);

struct rlimit_record {
  uint64_t cur, max;  // RLIM_INFINITY as ~0
};

struct itimer_record {
  int64_t interval_us, value_us;  // ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF
};

constexpr uint32_t kSignals = 64;
constexpr uint32_t kRlimits = 16;

enum proc_flags : uint32_t {
  kProcUnrestorable = 1u << 0,  // taken under a sanitizer (its shadow memory is not in the capsule)
};

// The kernel's view of the address space (PR_SET_MM_MAP): /proc/PID/stat
// fields 26-28 and 45-51, brk, the auxiliary vector.
enum mm_field : uint32_t {
  kMmStartCode, kMmEndCode, kMmStartData, kMmEndData, kMmStartBrk, kMmBrk, kMmStartStack,
  kMmArgStart, kMmArgEnd, kMmEnvStart, kMmEnvEnd, kMmFields
};
constexpr uint32_t kAuxvWords = 64;

struct procstate_record {
  uint32_t umask;
  uint32_t personality;
  uint32_t cwd;        // offset into strings
  uint32_t flags;      // proc_flags
  sigaction_record sigactions[kSignals];  // signal N at N - 1
  rlimit_record rlimits[kRlimits];        // RLIMIT_* order
  itimer_record itimers[3];
  uint64_t mm[kMmFields];
  uint32_t auxv_words;  // of auxv, pairs ending with AT_NULL
  uint32_t exe;         // /proc/self/exe: offset into strings
  uint64_t auxv[kAuxvWords];
};
static_assert(sizeof(procstate_record) == 16 + 32 * 64 + 16 * 16 + 16 * 3 + 8 * 11 + 8 + 8 * 64);

// A descriptor of the program's (table fds), as it was in the pause.
enum class fd_kind : uint32_t {
  file = 1,      // a regular file: reopened by path, its identity checked, at its offset
  dir = 2,       // a directory
  device = 3,    // a character device (/dev/null, /dev/urandom, a terminal): reopened by path
  other = 4,     // a pipe or socket to a terminal or another process on 0-2: the restoring command's
  pipe = 5,      // a pipe or FIFO end: detail fd_pipe (+ the bytes buffered in it, on one end per pipe)
  eventfd = 6,   // detail fd_eventfd
  timerfd = 7,   // detail fd_timerfd
  signalfd = 8,  // detail fd_signalfd
  epoll = 9,     // detail: an fd_epoll_entry per registration
  socket = 10,   // detail fd_socket (+ the bytes queued to it, for one end of a pair within the process)
  unnamed = 11,  // a deleted file, an O_TMPFILE file or a memfd: detail fd_unnamed + its bytes
};

struct fd_record {
  int32_t fd;
  uint32_t kind;     // fd_kind
  uint32_t flags;    // F_GETFL
  uint32_t cloexec;  // F_GETFD & FD_CLOEXEC
  uint64_t offset;   // of a file
  uint64_t dev, ino, size;
  uint32_t path;     // /proc/self/fd/N's link: offset into strings
  int32_t same_as;   // an earlier record's fd of the same open file (a dup), or -1
  uint64_t detail;   // offset into fd_data, 8-aligned
  uint64_t detail_len;
};
static_assert(sizeof(fd_record) == 72 && std::has_unique_object_representations_v<fd_record>);

// A signal pending for the process (not one of its threads) at the
// snapshot: the kernel's siginfo, queued again before the program runs.
struct signal_record {
  unsigned char info[128];
};
static_assert(sizeof(signal_record) == 128);

// A signal pending for one thread alone (pthread_kill, tgkill, a timer's
// SIGEV_THREAD_ID), queued again to that thread at restore.
struct thread_signal_record {
  int32_t tid;
  uint32_t reserved;
  unsigned char info[128];  // siginfo_t
};
static_assert(sizeof(thread_signal_record) == 136);

// A POSIX timer of the process (timer_create), as /proc/PID/timers and
// timer_gettime showed it in the pause: made again with its id, its clock,
// its notification and the time it had left.  Overruns are not kept.
struct timer_record {
  int32_t id;
  int32_t clock;       // clockid_t
  int32_t notify;      // SIGEV_SIGNAL 0, SIGEV_NONE 1, SIGEV_THREAD_ID 4
  int32_t signo;
  int32_t tid;         // SIGEV_THREAD_ID: the thread signalled
  uint32_t reserved;
  uint64_t value;      // sigev_value
  int64_t interval_ns;
  int64_t value_ns;    // left until it fires (0: disarmed)
};
static_assert(sizeof(timer_record) == 48 && std::has_unique_object_representations_v<timer_record>);

// A named regular file's modification time (fd_kind::file; capsules of
// before it have no detail): a file opened read-only is known again by
// its size and this when its device and inode changed (a new container's
// overlay mount, a copy made with its times).
struct fd_file {
  int64_t mtime_ns;
  uint64_t reserved;
};
static_assert(sizeof(fd_file) == 16 && std::has_unique_object_representations_v<fd_file>);

// An unnamed regular file's content, whole, as it was in the pause.
struct fd_unnamed {
  uint64_t size;   // bytes right after this
  uint32_t seals;  // F_GET_SEALS of a memfd (F_SEAL_SEAL alone: made without sealing)
  uint32_t memfd;  // 1: a memfd (the record's path is /memfd:NAME (deleted))
};
static_assert(sizeof(fd_unnamed) == 16 && std::has_unique_object_representations_v<fd_unnamed>);
constexpr uint64_t kUnnamedMax = uint64_t{64} << 20;  // of every unnamed file of a snapshot, together

struct fd_pipe {
  uint64_t id;        // the pipe's inode: the ends of one pipe share it
  uint32_t capacity;  // F_GETPIPE_SZ
  uint32_t fifo;      // 1: a named FIFO (the record's path)
  uint64_t queued;    // bytes buffered, right after this (on the first end of each pipe only)
};
static_assert(sizeof(fd_pipe) == 24 && std::has_unique_object_representations_v<fd_pipe>);

struct fd_eventfd {
  uint64_t count;
  uint32_t semaphore;  // EFD_SEMAPHORE (as the kernel shows it: 6.3 and later; else 0)
  uint32_t reserved;
};
static_assert(sizeof(fd_eventfd) == 16 && std::has_unique_object_representations_v<fd_eventfd>);

struct fd_timerfd {
  int32_t clockid;
  uint32_t settime_flags;  // TFD_TIMER_*: absolute values are kept as such only on the realtime clocks
  uint64_t ticks;          // expirations not read yet
  int64_t value_sec, value_nsec;  // what is left (or the absolute time, with TFD_TIMER_ABSTIME)
  int64_t interval_sec, interval_nsec;
};
static_assert(sizeof(fd_timerfd) == 48 && std::has_unique_object_representations_v<fd_timerfd>);

struct fd_signalfd {
  uint64_t mask;  // bit N - 1: signal N
};

struct fd_epoll_entry {
  int32_t tfd;  // the registered descriptor's number
  uint32_t events;
  uint64_t data;
  uint64_t ino;  // of the registered file, to tell a reused number
};
static_assert(sizeof(fd_epoll_entry) == 24 && std::has_unique_object_representations_v<fd_epoll_entry>);

enum class socket_state : uint32_t {
  unbound = 0,    // socket() only
  bound = 1,      // bound, not listening, not connected
  listening = 2,  // rebound and listening again at restore
  connected = 3,  // to a peer outside the process: a datagram socket reconnects, a stream one comes back
                  // closed (its reads see the end, its writes EPIPE)
  pair = 4,       // a Unix socket whose peer is one of the program's: fd_socket::pair
};

enum socket_options : uint32_t {
  kSockReuseAddr = 1u << 0,
  kSockReusePort = 1u << 1,
  kSockKeepAlive = 1u << 2,
  kSockNoDelay = 1u << 3,
  kSockV6Only = 1u << 4,
  kSockBroadcast = 1u << 5,
  kSockPassCred = 1u << 6,
  // A bound TCP socket that never sent or received a segment: bound by the
  // program (to listen or connect from that port later), not what a
  // connection reset before the snapshot leaves.  Its port is bound again
  // or the restore fails.
  kSockOnlyBound = 1u << 7,
  // A bound Unix datagram socket (not a pair's end, not connected) whose
  // queue was taken with each message's sender: fd_socket::queued holds,
  // per message, a uint32 length, a uint32 sender address length, the
  // sender's address and the bytes.
  kSockQueueSenders = 1u << 8,
};

struct fd_socket {
  int32_t domain, type, protocol;
  uint32_t state;    // socket_state
  uint32_t backlog;  // of a listening socket
  uint32_t options;  // socket_options
  uint32_t local_len, peer_len;
  unsigned char local[128], peer[128];  // sockaddrs
  uint64_t pair;     // the peer's inode (state pair)
  uint64_t queued;   // bytes right after this: a stream's queued bytes; a datagram socket's messages,
                     // each a uint32 length and its bytes (kSockQueueSenders: and its sender)
};
static_assert(sizeof(fd_socket) == 304 && std::has_unique_object_representations_v<fd_socket>);


// Building and reading a manifest.  A manifest is the status block (offset
// 0), the header (kHeaderOffset), the directory (right after the header)
// and the tables, each at the first kAlign-aligned offset after the one
// before it, in the directory's order; the manifest ends where the last
// table does (or the directory, without tables).  Every byte between them
// is zero.

struct table_input {
  table_kind kind;
  uint32_t record_size;
  uint64_t count;
  const void *data;  // count * record_size bytes
};

// The size manifest_build needs for these tables, or 0 when they are
// malformed (as manifest_build says) or their size does not fit in 64 bits.
uint64_t manifest_size(const table_input *tables, uint32_t ntables);

// Writes a whole manifest into out[cap]: status block (state, error and line
// as given), header (header_size, ntables and crc set here, the rest as in
// h), directory and tables, with every CRC.  Returns the bytes written, or 0
// when cap is too small or a table is malformed (an unknown kind, a record
// size that does not match the kind's: the record's size, 1 for strings,
// anything but 0 for the kinds of later stages; a kind given twice; no data
// for a count) or state is none of status's.  The records themselves are
// not checked: manifest_parse does.  out needs no alignment.
uint64_t manifest_build(const header &h, const table_input *tables, uint32_t ntables, status state, int32_t error,
                        const char *line, void *out, uint64_t cap);

// A status block for state (with error and line, cut to 487 bytes; null is
// ""), its CRC set.  The writer rewrites it in place at offset 0.
status_block status_make(status state, int32_t error, const char *line);

// Why a manifest cannot be read.
enum class parse_error : uint32_t {
  ok = 0,
  truncated,        // shorter than its own tables say
  bad_magic,        // not a capsule manifest
  bad_version,      // another format version
  status_crc,       // the status block is damaged
  header_crc,       // the header or the directory is damaged
  bad_header,       // sizes or counts that cannot be (also: a state that cannot be, an unaligned buffer)
  unknown_table,    // a table kind this version does not know
  bad_table,        // a table out of bounds, misaligned, of the wrong record size, or given twice;
                    // bytes between the tables that are not zero, or bytes after the last one
  table_crc,        // a table's content is damaged
  bad_record,       // a region, run, chunk or file that cannot be (out of order, overlapping, out of range)
};

// One line for an error, e.g. "the header or the table directory is damaged".
const char *parse_error_text(parse_error e);

// A parsed manifest: pointers into the caller's buffer.
struct manifest_view {
  const status_block *status;
  const header *hdr;
  const region *regions;
  uint64_t nregions;
  const run *runs;
  uint64_t nruns;
  const chunk *chunks;
  uint64_t nchunks;
  const file *files;
  uint64_t nfiles;
  const char *strings;
  uint64_t strings_len;
  const page_hash_record *page_hashes;
  uint64_t npage_hashes;
  // Tables of later stages, raw.
  const table_entry *dir;
  uint32_t ntables;
};

// Checks only the status block (what `snapshot list` needs): len, magic,
// version (before the CRC: another version may checksum otherwise), CRC,
// a known state, a terminated line.  buf must be 8-byte aligned.  *out is
// set on success only.
parse_error status_parse(const void *buf, uint64_t len, const status_block **out);

// Checks everything but the data files, in this order: the status block
// (status_parse); header_size == sizeof(header), ntables <= kTableKinds
// (bad_header), the directory within len (truncated), the header CRC; the
// header's fields (page_size a power of two >= kAlign, lib_build_id_len,
// terminated strings: bad_header); each table (a known kind, its record
// size, once only, kAlign-aligned, after the one before it, the bytes in
// between zero, within len (truncated; bad_table if its end overflows), its
// CRC), nothing after the last table; then the records:
// - regions: start < end, page-aligned, ascending and disjoint; a known
//   kind, flags and madvise bits; prot within PROT_READ|WRITE|EXEC; file
//   < nfiles or kNoFile; name < strings_len or 0; runs [first_run,
//   first_run + nruns) right after the previous region's, covering the
//   region exactly in order, and every run belongs to a region;
// - runs: a known source, npages > 0; mem: offset aligned and the pages
//   within mem_size; pmem: offset aligned, file < nfiles, the end within
//   64 bits;
// - chunks: offset aligned, the end within 64 bits; of mem (kNoFile):
//   within mem_size; else file < nfiles;
// - files: path < strings_len, a known identity, build_id_len <= 20;
// - strings: ending with NUL.
// A missing table is empty (null, 0).  buf must be 8-byte aligned.  *out
// (pointers into buf) is set on success only.  Never reads outside
// buf[0, len), whatever the bytes.
parse_error manifest_parse(const void *buf, uint64_t len, manifest_view *out);

// A string of the strings table, or "" if off is out of range or not
// terminated.
const char *string_at(const manifest_view &m, uint32_t off);

}  // namespace mmtier::capsule
