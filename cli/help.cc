// The manual of the mmtier command and of each subcommand, printed by
// --help and `mmtier help COMMAND`.
#include "cli.h"

namespace mmtier::cli {

namespace {

constexpr const char kMain[] = R"(NAME
    mmtier - run programs under libmmtier and watch their memory tiers

SYNOPSIS
    mmtier run [OPTIONS] [--] COMMAND [ARGS...]
    mmtier stat (PID | --all) [--json | --prometheus] [-o FILE]
    mmtier top [--interval T] [--iterations N]
    mmtier plot PID [--seconds N] [--interval T] [-o FILE.svg]
    mmtier snapshot (PID | list | info CAPSULE | delete CAPSULE...) [--dir DIR]
    mmtier restore CAPSULE [--detach]
    mmtier rollback PID --to CAPSULE|-N [--as-new]
    mmtier clone CAPSULE [--count N] [--port-map FROM:TO,...]
    mmtier migrate PID --to HOST:PORT --token-file FILE
    mmtier receive --listen [ADDRESS:]PORT [--dir DIR]
    mmtier capsule (pack CAPSULE | unpack [FILE])
    mmtier inject [-f FILE] [-o FILE]
    mmtier help [COMMAND]
    mmtier --version

DESCRIPTION
    libmmtier.so places the memory of unmodified programs on two tiers,
    DRAM and PMem (a larger, slower tier backed by files in
    MMTIER_PMEM_PATH), and while they run moves hot memory to DRAM and cold
    memory to PMem.  Every process running under it publishes its live
    statistics in a small file that the commands below read without
    attaching to the process or pausing it.

COMMANDS
    run     Run COMMAND under libmmtier, with placement options.
    stat    Print the statistics of one process, or of all of them: a
            table, JSON, or the Prometheus text format.
    top     A live view of every process under libmmtier, sorted by DRAM
            use, refreshed every second.
    plot    Sample a process over time and write an SVG chart of its DRAM
            and PMem bytes and its promotions per second.
    snapshot
            Take a snapshot of a process (mmtier snapshot PID); list,
            inspect, verify and delete the capsules of a capsule directory.
    restore Bring a process back from a capsule, with its PID.
    rollback
            Take a running process back to one of its snapshots.
    clone   Start thin clones of a capsule: processes that share its
            memory until each writes it.
    migrate Move a running process to another host (where mmtier
            receive waits).
    receive Wait for one migration and run the process it brings.
    capsule Pack a capsule into one tar stream, or unpack one, to move it.
    inject  Rewrite Kubernetes YAML so that the pods whose mmtier.io/
            annotations ask for it run under libmmtier.
    help    Print the manual of a command (as COMMAND --help does).

OPTIONS
    -h, --help     Print this manual and exit.
    -V, --version  Print the version and exit.

EXIT STATUS
    0    Success.
    1    An error, reported in one line on stderr: no such process, a
         process not running under libmmtier, permission denied, an
         invalid configuration value.
    2    Invalid usage (unknown option, missing argument).
    mmtier run exits with the status of COMMAND, 126 when COMMAND cannot
    be executed and 127 when it is not found.

FILES
    /dev/shm/mmtier-UID/PID.stats
        The live statistics of process PID running as effective user UID
        (mode 0600, in a directory of mode 0700), removed when the process
        exits.  The process holds a lock on it while it runs; a file whose
        process is gone is ignored and removed by the next reader.

ENVIRONMENT
    MMTIER_STATS_DIR
        Directory of the statistics files instead of /dev/shm/mmtier-UID,
        read by the processes under libmmtier and by mmtier alike; "off"
        means the processes publish nothing.
    MMTIER_LIBRARY
        The libmmtier.so that mmtier run preloads.
    MMTIER_SNAPSHOT_DIR
        The directory of the snapshot capsules mmtier snapshot reads (see
        mmtier snapshot --help for the default).
    The variables that configure the library are listed in mmtier run
    --help.

EXAMPLES
    mmtier run --dram-limit 256M -- ./server --port 8080
    mmtier stat --all
    mmtier stat 4242 --json
    mmtier top
    mmtier plot 4242 --seconds 60 -o hot-set.svg
    mmtier snapshot list
)";

constexpr const char kRun[] = R"(NAME
    mmtier run - run a command under libmmtier

SYNOPSIS
    mmtier run [--dram-ratio D:P | --dram-limit SIZE] [--pmem-limit SIZE]
               [--pmem-path DIR] [--policy ratio|dram-first] [--no-promote]
               [--log LEVEL] [--report DEST] [--stats-dir DIR|off]
               [--snapshot-dir DIR] [--snapshot-every DUR] [--keep N]
               [--autosave DUR [--max-restarts N] [--restart-window DUR]]
               [--] COMMAND [ARGS...]

DESCRIPTION
    Runs COMMAND with libmmtier.so preloaded: the library is put first in
    LD_PRELOAD (entries already there are kept) and each option below sets
    the MMTIER_* variable the library reads.  MMTIER_* variables already in
    the environment apply unless an option replaces them.

    Before COMMAND starts, the configuration it would see is checked with
    the library's own parser: an invalid value is reported with the
    library's message, for example
        mmtier: invalid MMTIER_DRAM_RATIO="x": expected D:P with integers
        0..1000000, not both 0 (e.g. 1:4)
    and COMMAND is not run.

    COMMAND then replaces mmtier (it is executed in the same process), so
    it keeps mmtier's pid and its exit status and signals are its own.
    The options end at "--" or at the first argument that is not an option.
    COMMAND is looked up in PATH.  A set-user-ID COMMAND runs without
    libmmtier: the dynamic loader ignores such a preload for it.

    With --autosave, mmtier stays as COMMAND's parent instead: COMMAND
    takes a snapshot at every interval (auto-PID-UTCTIME in the capsule
    directory, the newest --keep kept, each writing only what changed
    since the last), and when it dies of a crash (SIGSEGV, SIGBUS, SIGILL,
    SIGFPE, SIGABRT, SIGSYS, SIGTRAP, or SIGKILL, which the OOM killer
    sends) mmtier restores the newest complete one with mmtier restore
    --detach, says so on stderr, and supervises the restored process the
    same way.  SIGTERM, SIGINT, SIGHUP and SIGQUIT sent to mmtier are
    passed on and end the supervision: with SIGTERM COMMAND takes a last
    snapshot before it ends (MMTIER_SNAPSHOT_SIGNAL=TERM, unless set
    otherwise); SIGUSR1 and SIGUSR2 are passed on.  After --max-restarts
    restores within --restart-window, or when there is no snapshot to
    restore, mmtier gives up and exits with COMMAND's status.  After a
    reboot, mmtier restore brings back the newest (mmtier snapshot list
    shows them).

OPTIONS
    --dram-ratio D:P
        MMTIER_DRAM_RATIO.  With the ratio policy, of every D+P bytes
        placed D go to DRAM and P to PMem (integers 0..1000000, not both 0;
        default 1:4).  Not together with --dram-limit.
    --dram-limit SIZE
        MMTIER_DRAM_LIMIT.  Most bytes placed in DRAM; beyond it memory
        goes to PMem.  A size with optional K, M, G or T suffix (512M, 2G),
        0, or none.  Not together with --dram-ratio.
    --pmem-limit SIZE
        MMTIER_PMEM_LIMIT.  Most bytes placed in PMem; beyond it memory
        goes to DRAM.  Same form as --dram-limit.
    --pmem-path DIR
        MMTIER_PMEM_PATH.  Directory for the PMem tier's files, existing
        and writable (a DAX mount on real PMem; default /dev/shm, else
        /tmp).
    --policy ratio|dram-first
        MMTIER_POLICY.  ratio splits memory by the DRAM ratio; dram-first
        fills DRAM up to its limit, then PMem.
    --no-promote
        MMTIER_PROMOTE=0.  No background promotion and demotion: memory
        stays where placement put it.
    --log error|warn|info|debug
        MMTIER_LOG.  Least severe library message written to stderr
        (default warn).
    --report DEST
        MMTIER_REPORT.  Write a report of where memory went when COMMAND
        exits: stderr, or a file path in which %p becomes the pid; off.
    --stats-dir DIR|off
        MMTIER_STATS_DIR.  Where COMMAND publishes its statistics (an
        absolute path; created mode 0700 if missing), or off for nowhere.
        mmtier stat, top and plot find it only with the same
        MMTIER_STATS_DIR in their environment.
    --snapshot-dir DIR
        MMTIER_SNAPSHOT_DIR.  Where COMMAND's snapshots go (an absolute
        path).
    --snapshot-every DUR
        MMTIER_SNAPSHOT_EVERY.  COMMAND takes a snapshot at this interval
        (1s to 24h: 30s, 10m, 1h) once it has placed 32 MiB
        (MMTIER_BACKGROUND_AT=0 in the environment: from its start).
    --keep N
        MMTIER_SNAPSHOT_KEEP.  How many of those it keeps (default 10; 3
        with --autosave).
    --autosave DUR
        Periodic snapshots at DUR, and restore after a crash (above).
    --max-restarts N
        --autosave: restores allowed within the window (default 5).
    --restart-window DUR
        --autosave: the window (default 600s).
    -h, --help
        Print this manual and exit.

EXIT STATUS
    The exit status of COMMAND (a shell shows 128+N when a signal N killed
    it).  Otherwise:
    1    An invalid configuration value, or libmmtier.so not found.
    2    Invalid usage: unknown option, no COMMAND, both --dram-ratio and
         --dram-limit.
    126  COMMAND was found but could not be executed.
    127  COMMAND was not found.

FILES
    The library preloaded is the first of:
        $MMTIER_LIBRARY
        libmmtier.so in the directory of the mmtier executable (a build
        tree)
        ../lib/)" MMTIER_LIBRARY_ARCHITECTURE R"(/libmmtier.so, ../lib/libmmtier.so
        relative to that directory (an installed tree)
        )" MMTIER_INSTALL_FULL_LIBDIR R"(/libmmtier.so (where it was installed)
    (each also as libmmtier.so.0).

ENVIRONMENT
    MMTIER_LIBRARY    The library to preload (see FILES).
    LD_PRELOAD        Kept, after libmmtier.so.
    MMTIER_*          Passed on to COMMAND and checked first: the ones set
                      by the options above, and MMTIER_MIGRATE_MBPS (most
                      MiB/s moved between the tiers, default 256, 0: no
                      limit), MMTIER_SCAN_INTERVAL (time between access
                      scans, 1ms..60s, default 100ms), MMTIER_MMAP_THRESHOLD
                      (smallest anonymous mmap placed on tiers, default
                      64K), MMTIER_BACKGROUND_AT (memory placed before
                      mmtier's threads and control socket start, default
                      32M; 0: at once, for a small process to snapshot).

EXAMPLES
    mmtier run -- python3 train.py
        Default placement (DRAM:PMem 1:4) with promotion of hot memory.
    mmtier run --dram-limit 1G --policy dram-first -- ./db --cache 8G
        The first GiB in DRAM, the rest in PMem.
    mmtier run --dram-ratio 1:3 --no-promote --report stderr -- sort big.txt
        A fixed split, and a report of where memory went at exit.
    mmtier run --autosave 10s -- redis-server --port 6379
        A snapshot every 10 s; after a crash Redis is back with the data
        of the last one.
)";

constexpr const char kStat[] = R"(NAME
    mmtier stat - print the memory-tier statistics of processes under
    libmmtier

SYNOPSIS
    mmtier stat PID [--json | --prometheus] [-o FILE]
    mmtier stat --all [--json | --prometheus] [-o FILE]

DESCRIPTION
    Reads the statistics that a process running under libmmtier publishes,
    without attaching to it or pausing it, and prints them once.  With PID,
    a detailed view of that process; with --all, one row per process: the
    caller's own processes, or every user's when run as root.  Files left
    by processes that are gone are removed on the way.  A process that
    started less than 2 s ago is given that long to publish its first
    statistics.

    The figures, per tier (DRAM and PMem):
    resident    Managed bytes present in memory, as last measured by the
                process: by its mover every 10 s (every second while
                mmtier top or plot watches it), when it calls
                mmtier_get_stats, and on allocation in a small process
                without a mover.  Figures older than 2 s of a process whose
                mover runs are measured again before they are shown (stat
                waits for the mover's next scan, at most 2.5 s).  The
                detailed view says how old the figures are; "-" (JSON null)
                until first measured.
    placed      Bytes of the 2 MiB units placed on the tier; peak placed is
                the most at once.
    limit       MMTIER_DRAM_LIMIT / MMTIER_PMEM_LIMIT, or none.
    And for the process:
    DRAM budget The mover's DRAM budget of its last scan, or none; the
                table's DRAM-BGT column shows MMTIER_DRAM_LIMIT when set.
    promotions  Units moved from PMem to DRAM by the mover; demotions the
                other way; failed moves left the unit where it was.
    migrated    Bytes copied by promotions and demotions; the migrate rate
                is the bytes moved per second over the last second.
    scans       Access scans done by the mover.
    heat        Units by heat, in 8 buckets from cold [0, 0.125) to hot
                [0.875, 1]; heat is the decayed share of a unit's sampled
                pages found touched per scan.

OPTIONS
    -a, --all
        Every process under libmmtier instead of one PID.
    --json
        JSON (see JSON below).
    --prometheus
        The Prometheus text exposition format, version 0.0.4 (see
        PROMETHEUS below).
    -o, --output FILE
        Write to FILE instead of stdout, through a temporary file renamed
        over it, so that a reader never sees a partial file.
    -h, --help
        Print this manual and exit.

JSON
    One object for PID; {"processes": [OBJECT, ...]} for --all, sorted by
    pid ([] when there is none).  Sizes are in bytes and times in
    nanoseconds; null means not measured yet, or no limit.
    pid, comm, uid              The process, its command name (at most 15
                                bytes) and its effective uid.
    started_unix_ns             When it began publishing (since the epoch).
    updated_unix_ns             When its statistics last changed.
    sampled_unix_ns             When mmtier read them.
    policy                      "ratio" or "dram-first".
    ratio_dram, ratio_pmem      MMTIER_DRAM_RATIO.
    promote                     MMTIER_PROMOTE, true or false.
    unit_size_bytes             Bytes per unit of placement.
    scan_interval_ns            MMTIER_SCAN_INTERVAL.
    migrate_limit_bytes_per_second  MMTIER_MIGRATE_MBPS in bytes per
                                second; null: no limit.
    pmem_path                   The PMem tier's directory, or "NUMA node N".
    tiers                       {"dram": TIER, "pmem": TIER}, each TIER
                                {"placed_bytes", "policy_placed_bytes",
                                "peak_placed_bytes", "resident_bytes",
                                "limit_bytes"}; policy_placed_bytes: of
                                placed_bytes, placed by the ratio or
                                budget (the rest: start-up blocks and
                                explicit placement, forced to the tier).
    resident_unix_ns            When resident_bytes were measured; null:
                                never.
    dram_budget_bytes           The mover's DRAM budget; null: none.
    fallbacks                   Placements that went to the other tier.
    mmap_bytes                  Bytes of managed anonymous mmaps.
    forks                       fork()s that froze file-backed units.
    frozen_bytes                PMem units a fork froze, now (placed on
                                PMem; pages written since the fork are
                                copies in DRAM).
    frozen_copied_bytes         Those copies (part of the DRAM resident
                                bytes), as of resident_unix_ns.
    reshares, reshare_bytes     Frozen units the mover gave a shared PMem
                                mapping again; bytes copied for it.
    reshare_stops, reshare_pause_max_ns, reshare_pause_total_ns
                                The moments every other thread was
                                stopped for it; the longest; in all.
    reshare_stop_refusals, reshare_failed
                                Stops given up (a thread would not stop
                                in time); other failures.
    snapshots, snapshots_failed Durable snapshots taken of the process;
                                attempts that failed.
    snapshot_last_unix_ns       When the last durable one was taken;
                                null: never.
    snapshot_last_pause_ns, snapshot_last_written_bytes,
    snapshot_last_shared_bytes, snapshot_last_linked_bytes
                                Its pause, memory bytes written, bytes
                                referred to in earlier capsules, PMem
                                bytes linked.
    snapshot_pause_max_ns, snapshot_pause_total_ns,
    snapshot_written_bytes      The longest pause; all pauses; all bytes
                                written.
    mover_running               true while the mover thread runs.
    scans, promotions, demotions, migrations_failed
                                The mover's counters.
    migrations_failed_by_reason {"ENOSPC": N, ...}: failed moves by the
                                errno they failed with (the first four
                                reasons; "other": the rest).
    map_count_holds             Scans whose migrations were held back
                                because the process was within an eighth
                                of vm.max_map_count.
    migrated_bytes              Bytes copied by promotions and demotions.
    migrate_rate_bytes_per_second  Over the last second.
    samples, samples_touched    Pages watched for an access; of which
                                found touched.
    tracking_faults             Page faults answered by the fault service.
    mover_cpu_ns                CPU time of the mover and fault service.
    heat_histogram              8 unit counts; bucket i: heat in
                                [i/8, (i+1)/8).

PROMETHEUS
    Every family has HELP and TYPE lines and every sample the labels pid
    and comm (escaped as the format requires).  With no process the output
    is empty.
    Gauges      mmtier_resident_bytes, mmtier_placed_bytes,
                mmtier_policy_placed_bytes, mmtier_peak_placed_bytes and
                mmtier_limit_bytes with label
                tier="dram"|"pmem" (resident only once measured, limit only
                when set); mmtier_dram_budget_bytes (when there is one);
                mmtier_migrate_rate_bytes_per_second; mmtier_mover_running
                (1 or 0); mmtier_mmap_bytes; mmtier_frozen_bytes;
                mmtier_frozen_copied_bytes;
                mmtier_reshare_pause_max_seconds; mmtier_start_time_seconds;
                mmtier_snapshot_last_success_timestamp_seconds (0:
                never), mmtier_snapshot_last_pause_seconds,
                mmtier_snapshot_pause_max_seconds,
                mmtier_snapshot_last_written_bytes,
                mmtier_snapshot_last_shared_bytes,
                mmtier_snapshot_last_linked_bytes;
                mmtier_unit_heat with label bucket="0.125" .. "1" (the
                upper bound of its heat range); mmtier_info (always 1,
                labels uid, policy, ratio, promote, pmem_path).
    Counters    mmtier_scans_total, mmtier_promotions_total,
                mmtier_demotions_total, mmtier_migrations_failed_total,
                mmtier_migrations_failed_by_reason_total (label reason:
                the errno name, or "other"),
                mmtier_map_count_holds_total,
                mmtier_migrated_bytes_total, mmtier_samples_total,
                mmtier_samples_touched_total, mmtier_tracking_faults_total,
                mmtier_mover_cpu_seconds_total, mmtier_fallbacks_total,
                mmtier_forks_total, mmtier_reshares_total,
                mmtier_reshare_bytes_total,
                mmtier_reshare_pause_seconds_total, mmtier_snapshots_total,
                mmtier_snapshots_failed_total,
                mmtier_snapshot_pause_seconds_total,
                mmtier_snapshot_written_bytes_total.
    For the node exporter's textfile collector, run every 15 s or so (a
    systemd timer, cron):
        mmtier stat --all --prometheus \
            -o /var/lib/prometheus/node-exporter/mmtier.prom

EXIT STATUS
    0    Printed (also for --all with no process).
    1    An error, in one line on stderr:
             mmtier: no process with pid 123
             mmtier: process 123 (cat) is not running under libmmtier
             mmtier: permission denied: cannot read the statistics of
             process 123 (owned by uid 1000)
    2    Invalid usage.

FILES
    /dev/shm/mmtier-UID/PID.stats   The statistics of process PID of
                                    effective user UID.
    /proc/PID/root/DIR/N.stats      Those of a process in a container
                                    (PID and mount namespaces of its
                                    own), found for mmtier stat PID:
                                    DIR its statistics directory, N the
                                    pid it sees itself as.  Shown under
                                    PID; --all does not list them.

ENVIRONMENT
    MMTIER_STATS_DIR    Read the statistics files in this directory instead
                        (only there, also for --all); "off": there are
                        none.  A process in a container is read in its
                        own directory whatever this says.

EXAMPLES
    mmtier stat 4242
    mmtier stat --all
    mmtier stat 4242 --json | jq '.tiers.dram.resident_bytes'
    mmtier stat --all --prometheus
)";

constexpr const char kTop[] = R"(NAME
    mmtier top - live view of the processes under libmmtier

SYNOPSIS
    mmtier top [--interval T] [--iterations N]

DESCRIPTION
    Shows every process running under libmmtier (the caller's own, or
    every user's when run as root), one line each, sorted by DRAM use
    (largest first), refreshed every interval.  Each line has the pid, the
    command, the bytes in DRAM and in PMem (resident; placed bytes until
    the process first measured them; top asks each process to measure them
    every second while it watches), a bar of the DRAM share ('#')
    against the PMem share ('-'), the units promoted to DRAM per second
    since the last refresh, and the bytes moved between the tiers per
    second.  The first line has the time and the totals.

    On a terminal top uses the alternate screen and restores the terminal
    when it exits (q, Ctrl-C, SIGTERM, SIGHUP; Ctrl-Z restores it while
    stopped).  Lines are cut to the terminal's width.  When stdout is not a
    terminal, frames are printed one after another without escape
    sequences.

OPTIONS
    -d, --interval T
        Time between refreshes: 500ms, 2s, 1.5 (seconds); from 50ms to 1h.
        Default 1s.
    -n, --iterations N
        Exit after N refreshes (for scripts and tests).  Default: until q.
    -h, --help
        Print this manual and exit.

KEYS
    q    Quit.

EXIT STATUS
    0 when quit with q or after N iterations; killed by the signal after
    restoring the terminal on SIGINT, SIGTERM or SIGHUP; 2 invalid usage.

ENVIRONMENT
    MMTIER_STATS_DIR    Read the statistics files in this directory instead
                        of /dev/shm/mmtier-UID.

EXAMPLES
    mmtier top
    mmtier top --interval 250ms
    mmtier top --iterations 1 > snapshot.txt
)";

constexpr const char kPlot[] = R"(NAME
    mmtier plot - chart a process's memory tiers over time as SVG

SYNOPSIS
    mmtier plot PID [--seconds N] [--interval T] [-o FILE.svg]

DESCRIPTION
    Samples the statistics of process PID every interval for N seconds, or
    until the process exits or mmtier gets Ctrl-C, and writes what it has
    as a self-contained SVG chart: the upper panel shows the bytes resident
    in DRAM and in PMem over time (placed bytes until the process first
    measured them; plot asks its mover to measure them every second), the
    lower panel the promotions to DRAM per second between samples.
    Watching a process that has a hot set shows DRAM converging on it.
    Prints one line saying where the chart went.

    For scripts: the series are <polyline id="series-dram-resident">,
    id="series-pmem-resident" and id="series-promotions", and the samples
    are in <metadata id="mmtier-samples"> as JSON: {"pid", "comm",
    "interval_seconds", "samples": [{"t", "dram_bytes", "pmem_bytes",
    "resident", "dram_placed_bytes", "pmem_placed_bytes", "promotions",
    "demotions"}, ...]}, t in seconds, promotions and demotions totals.

OPTIONS
    -s, --seconds N
        How long to sample, in seconds (decimals allowed).  Default 30.
    -i, --interval T
        Time between samples: 500ms, 1s, 0.25 (seconds); from 10ms to 1h.
        Default 500ms.
    -o, --output FILE
        Where to write the chart; - for stdout.  Default mmtier-PID.svg in
        the current directory.
    -h, --help
        Print this manual and exit.

EXIT STATUS
    0    The chart was written (also when the process exited early).
    1    An error: no such process, not running under libmmtier,
         permission denied, no sample taken, the file cannot be written.
    2    Invalid usage.

ENVIRONMENT
    MMTIER_STATS_DIR    Read the statistics files in this directory instead
                        of /dev/shm/mmtier-UID.

EXAMPLES
    mmtier run --dram-limit 256M -- build/bench/workloads/gups --seconds 30 &
    mmtier plot $! --seconds 60 --interval 250ms -o gups.svg
        Charts the GUPS hot-set workload from its start until it exits
        (a process just started is waited for up to 2 s to publish).
)";

constexpr const char kSnapshot[] = R"(NAME
    mmtier snapshot - take, list, inspect and delete snapshot capsules

SYNOPSIS
    mmtier snapshot PID [--name NAME] [--dir DIR] [--full] [--json]
    mmtier snapshot list [PID] [--dir DIR] [--json]
    mmtier snapshot info CAPSULE [--verify] [--json] [--dir DIR]
    mmtier snapshot delete CAPSULE... [--dir DIR]

DESCRIPTION
    A snapshot of a process under libmmtier is a capsule: a directory
    NAME.mmtcap (mode 0700) holding a manifest (the process's header and
    tables, each with a CRC32C), the memory file mem, and hard links to
    PMem files and to earlier capsules' mem files.  A capsule is written
    under a temporary name, .NAME.mmtcap.tmp-PID-HEX (PID: the process
    snapshotted), and renamed to NAME.mmtcap once complete.

    PID     Takes a snapshot of process PID, which must run under
            libmmtier and have placed 32 MiB, or have started with
            MMTIER_BACKGROUND_AT=0 (it then listens on PID.ctl next to
            its statistics page).  Every thread of it is
            stopped together for the pause; it runs on while a child of it
            writes the capsule.  Prints the capsule's path once the capsule
            is complete and flushed to stable storage, and on stderr the
            pause, the threads, the memory written and the PMem linked.
            When the capsule directory is on the file system of the PMem
            tier (MMTIER_PMEM_PATH), PMem units are not copied: the capsule
            hard-links the PMem file (ZeroIO) and the process goes on with
            a new one; otherwise a second line says why they were copied.
            Snapshots are incremental: when the last capsule the process
            completed is in the same directory, only the pages changed
            since (compared by a 128-bit hash per page) are written, and
            the capsule hard-links the earlier capsules' mem files that
            hold the rest (mem-ID), so deleting any capsule never breaks
            another; stderr says how much was unchanged.  After
            MMTIER_SNAPSHOT_CHAIN such files, or with --full, every page is
            written.  The capsule goes
            to --dir (relative to this command's directory), else to the
            process's MMTIER_SNAPSHOT_DIR; for a process in a container
            (PID its host pid), --dir is an absolute path as the process
            sees it, and so is the path printed; it is named NAME, else
            COMMAND-PID-UTCTIME.  Only the process's user and root may.
            mmtier restore brings a capsule back (mmtier restore --help).
    list    One line per capsule of the capsule directory: its name, when
            it was taken (local time), the process's pid and command, the
            bytes it takes on disk (its files' blocks, like du), of them
            the bytes in files other capsules or the PMem tier link too
            (SHARED), and its status; with PID, only the capsules of that
            process (the PID it saw itself as: a restored one keeps it):
            incomplete  being written, or given up half-way; a temporary
                        capsule says whether its writer is still running
                        or gone (what it left can be deleted)
            complete    every file written and checksummed, not yet
                        flushed to stable storage
            durable     complete and flushed
            failed      the writer gave up, with its reason
            damaged     the manifest cannot be read (the reason says
                        what is wrong), or mem is shorter than it says
            unreadable  refused: not owned by you, open to others, a
                        symbolic link; or an error reading it
    info    The manifest of one capsule in full: process, credentials,
            time, kernel, boot id, mmtier version, sizes, regions by kind
            and memory bytes by where they are kept.  Only the manifest is
            read, unless --verify.
    delete  Deletes capsules: their files, then the directory.  A
            directory that holds anything a capsule does not (or no
            manifest) is not a capsule and is left alone, as is a
            temporary capsule whose writer is still running.

    CAPSULE is a path (with a slash: ./NAME.mmtcap, /dir/NAME.mmtcap) or
    a name looked up in the capsule directory: NAME, NAME.mmtcap, or a
    temporary capsule's name.  Every capsule is opened without following
    a symbolic link and must belong to the caller (root may open any)
    and have no group or other permission bits.

OPTIONS
    --dir DIR
        The capsule directory instead of the default (see ENVIRONMENT).
    --name NAME
        PID: the capsule's name: 1 to 64 of A-Z a-z 0-9 . _ -, not
        starting with a dot.
    --full
        PID: write every page, none referred to in an earlier capsule.
    --json
        JSON (see JSON below).
    --verify
        info: also read mem (and the earlier capsules' mem and the PMem
        files it links) and check the CRC32C of every chunk; the first
        damaged chunk is named by its file and offset.
    -h, --help
        Print this manual and exit.

JSON
    PID: {"pid", "path", "paused_ms", "threads", "memory_bytes" (written),
    "shared_bytes" (unchanged since earlier capsules, linked),
    "pmem_linked_bytes", "pmem_note" (why PMem was copied, or null)}.
    list: {"directory": DIR, "capsules": [CAPSULE, ...]} sorted by name,
    each CAPSULE {"name", "path", "status", "reason" (null but for failed,
    damaged, unreadable), "created_unix_ns", "pid", "comm" (null when the
    manifest cannot be read), "disk_bytes", "shared_disk_bytes", "writer"
    ({"pid", "running"}
    for a temporary capsule, else null)}.
    info: {"path", "status", "reason", "error" (the writer's errno name
    or null), "pid", "comm", "threads", "uid", "gid", "euid", "egid",
    "created_unix_ns", "paused_ns", "kernel_release", "boot_id",
    "mmtier_version", "capsule_id", "page_size", "mem_bytes",
    "manifest_bytes", "disk_bytes", "shared_disk_bytes", "shared_bytes",
    "base_id" (the capsule it was built on, or null), "regions",
    "regions_by_kind" {"reserve", "unit", "anon", "stack", "brk", "file",
    "vdso", "vvar", "stats"}, "bytes_by_source" {"hole", "mem", "pmem",
    "file", "zero", "base"}, "runs",
    "mem_chunks", "other_chunks", "files", "process_state"
    ({"signals_handled", "signals_ignored", "umask", "cwd"} as in the
    pause, or null), "verified" ({"chunks", "bytes"} with --verify, else
    null)}.  Sizes in bytes, times in nanoseconds.

EXIT STATUS
    0    Done (list: also when there is no capsule).
    1    An error, one line on stderr per capsule:
             mmtier snapshot: CAPSULE: no such capsule
             mmtier snapshot: CAPSULE: not owned by you
             mmtier snapshot: CAPSULE: not a capsule (no manifest)
             mmtier snapshot: CAPSULE: damaged: the header or the table
             directory is damaged
             mmtier snapshot: CAPSULE: mem is damaged: the chunk at offset
             2097152 (2.00 MiB) has CRC32C ..., the manifest says ...
         delete goes on with the other capsules and exits 1 if any was
         not deleted.  PID: the snapshot failed (the process says why:
         a capsule of that name exists, the directory cannot be written,
         a thread blocks the stop signal, ...); the process runs on and
         nothing is left behind.
    2    Invalid usage (unknown subcommand or option, no CAPSULE).
    3    PID cannot be reached: no such process, not under libmmtier
         (or below 32 MiB placed, MMTIER_BACKGROUND_AT), or another
         user's.

FILES
    $XDG_STATE_HOME/mmtier/capsules, else
    ~/.local/state/mmtier/capsules
        The default capsule directory; /var/lib/mmtier/capsules for root.

ENVIRONMENT
    MMTIER_SNAPSHOT_DIR
        The capsule directory (an absolute path), as the processes under
        libmmtier read it; --dir wins over it.
    MMTIER_SNAPSHOT_CHAIN
        As the processes read it: how many capsules' mem files one
        capsule may refer to before a snapshot is written in full.
    XDG_STATE_HOME, HOME
        Where the default capsule directory is.

EXAMPLES
    mmtier snapshot list
    mmtier snapshot info redis-1 --verify
    mmtier snapshot list --json | jq -r '.capsules[] |
        select(.status == "failed") | .name'
    mmtier snapshot delete redis-1 ./old/redis-0.mmtcap
)";

constexpr const char kRollback[] = R"(NAME
    mmtier rollback - take a running process back to one of its snapshots

SYNOPSIS
    mmtier rollback PID --to CAPSULE|-N [--dir DIR] [--lazy]
    mmtier rollback PID --to CAPSULE|-N --as-new [--port-map FROM:TO,...]
                    [--netns NAME] [--dir DIR]

DESCRIPTION
    Replaces the running process PID with the state of one of its
    snapshots: the program sees itself back at that instant.  PID is
    stopped (SIGSTOP) while the capsule is checked, as mmtier restore
    checks it (its owner, its checksums, the files it maps, the kernel),
    and must be the capsule's program (the PID it sees itself as, its
    command, executable and user); if anything refuses, it continues.
    Only then is PID ended (SIGKILL) and the capsule restored in its
    place, detached: as root at
    the same PID in this PID namespace once it is free, else in a PID
    namespace of its own where it is the same PID to itself.  What the
    process did after the snapshot is gone, as after a crash; its clients
    see their connections reset.

    --to -N picks the N-th newest durable capsule taken of that process
    (-1: the newest) in the capsule directory; --to CAPSULE names one (a
    path, or a name in the capsule directory), which must have been taken
    of that process.  A process supervised by mmtier (mmtier run
    --autosave) is refused: the supervisor would restore it again.

    --as-new leaves PID running and starts the snapshot beside it, as a
    thin clone (see mmtier clone --help): in a PID namespace of its own,
    its listening ports moved with --port-map or its sockets in another
    network namespace with --netns (else they clash with PID's).

OPTIONS
    --to CAPSULE|-N
        The snapshot to go back to.
    --dir DIR
        The capsule directory; default: the process's own
        MMTIER_SNAPSHOT_DIR, else the user's default (see mmtier snapshot
        --help).
    --lazy
        Restore lazily (see mmtier restore --help).
    --as-new
        Keep PID running; start the snapshot beside it (mmtier clone).
    --port-map FROM:TO,...
        With --as-new: listen on port TO where the snapshot listened on
        FROM.
    --netns NAME
        With --as-new: make its sockets in network namespace NAME.
    -h, --help
        Print this manual and exit.

EXIT STATUS
    0    Rolled back: the restored process's host PID is on stdout.
    1    An error or a refusal, one line on stderr; the process still
         runs, unless the restore itself failed after it was ended.
    2    Invalid usage.

ENVIRONMENT
    MMTIER_SNAPSHOT_DIR
        The capsule directory when the process has none of its own.

EXAMPLES
    mmtier snapshot list 4242
    mmtier rollback 4242 --to -2
        Back to the second newest snapshot of process 4242.
    mmtier rollback 4242 --to -1 --as-new --port-map 6379:6390
        Its newest snapshot beside it, listening on port 6390.
)";

constexpr const char kMigrate[] = R"(NAME
    mmtier migrate - move a running process to another host

SYNOPSIS
    mmtier migrate PID --to HOST:PORT (--token-file FILE | --token TOKEN)
                   [--rounds N] [--eager] [--dir DIR] [--json]

DESCRIPTION
    Moves process PID, running under libmmtier, to the host where
    `mmtier receive --listen PORT` waits (same binaries, libraries and
    kernel build; its PMem tier's directory must exist there).  While
    the program runs, snapshots are taken into a private directory under
    the capsule directory and sent over one TCP connection: a first one,
    then incremental ones, each sending only what changed since the one
    before (a file already sent is named, not sent again; holes are not
    sent).  When a round sends less than 16 MiB, sends more than 80 % of
    the one before (the program writes faster than the link), or after
    --rounds rounds, a last snapshot is taken with the program held
    stopped: nothing it does after that instant can be lost.  Its
    changes are sent, the receiver checks the checksums of what it
    received and restores it (lazily by default), and only once the
    process runs there is PID ended (SIGKILL).  The time PID is stopped
    (the downtime) is that last snapshot, its changes and the restore.
    Stop signals to this command wait meanwhile.

    If anything fails before that (the connection, the receiver's checks,
    the restore there), PID goes on where it stopped and the receiver
    removes what it received and ends what it started.  A hold is bounded:
    after 600 s without a decision (a stuck network: a silent peer is an
    error after about a minute) PID goes on and the migration fails.  If
    the connection breaks after PID ended and before the receiver heard
    it, the receiver stops its process (SIGSTOP) rather than lose it or
    run it twice, and says how to continue it.  The private directory is
    removed either way.

    The stream is not encrypted and the token is its only
    authentication: use it on a network you trust, or through a tunnel;
    give it in a file (--token-file), not on the command line, which
    every user of the host can read.

OPTIONS
    --to HOST:PORT
        Where mmtier receive listens ([ADDRESS]:PORT for IPv6).
    --token-file FILE
        A file whose first line is the token mmtier receive printed (or
        was given).
    --token TOKEN
        The token itself (visible to every user of the host in ps).
    --rounds N
        At most N rounds while the program runs (0 to 6, default 4; each
        builds on the ones before, within MMTIER_SNAPSHOT_CHAIN); 0 is a
        plain stop, copy, start.
    --eager
        The receiver restores eagerly (every byte in place before the
        program runs) instead of lazily.
    --dir DIR
        The capsule directory the private directory is made in (default:
        the process's MMTIER_SNAPSHOT_DIR, else the user's default).
    --json
        Print the outcome as JSON: pid, to, target_pid, rounds (each
        written_bytes, sent_bytes, seconds), sent_bytes,
        downtime_seconds, seconds.
    -h, --help
        Print this manual and exit.

EXIT STATUS
    0    The process runs on the target; its PID there is on stdout, a
         line per round and a summary on stderr.
    1    An error, one line on stderr saying where the process runs.
    2    Invalid usage.
    3    PID cannot be reached (not under libmmtier, another user's).

ENVIRONMENT
    MMTIER_STATS_DIR
        Where the process's control socket is (as for mmtier snapshot).
    MMTIER_SNAPSHOT_DIR
        The capsule directory when the process has none of its own.

EXAMPLES
    host2$ mmtier receive --listen 7000
    mmtier receive: listening on 0.0.0.0:7000; token 5f0c...; ...
    host1$ echo 5f0c... > token; mmtier migrate 4242 --to host2:7000 \
               --token-file token
)";

constexpr const char kReceive[] = R"(NAME
    mmtier receive - wait for a migration and run the process it brings

SYNOPSIS
    mmtier receive --listen [ADDRESS:]PORT [--token-file FILE | --token T]
                   [--dir DIR]

DESCRIPTION
    Listens on PORT (all addresses unless ADDRESS is given; 0: any free
    port) for one migration sent by mmtier migrate, and prints a line
    with the address, the port and the token on stderr.  A connection
    without the token is turned away and the wait goes on.  The
    capsules are received into a private directory under DIR, each
    checked (manifest, every checksum) before it is published in DIR;
    the last is restored stopped (mmtier restore --detach --stopped
    --migrated, lazily unless the source said --eager); once the source
    says its process ended, the process here goes on (SIGCONT), its PID
    is printed on stdout, and the earlier rounds' capsules are removed:
    the last one stays, as the process's newest capsule.

    If the source gives up or the stream breaks before the process runs
    here, nothing of the migration is left.  If it breaks after (the
    source's end is then unknown), the process restored here stays
    stopped, never run, and its capsule is kept: continue it (kill -CONT)
    if the source's process is gone, else end it.  Then the command
    exits.

OPTIONS
    --listen [ADDRESS:]PORT
        Where to listen.
    --token-file FILE, --token TOKEN
        The token the source must give (at least 16 characters; the first
        line of FILE); by default a random one, printed.
    --dir DIR
        The capsule directory (default: MMTIER_SNAPSHOT_DIR, else the
        user's default).
    -h, --help
        Print this manual and exit.

EXIT STATUS
    0    The process runs here (its PID on stdout).
    1    An error or a failed migration, one line on stderr.
    2    Invalid usage.

ENVIRONMENT
    MMTIER_SNAPSHOT_DIR
        The capsule directory (--dir wins).

EXAMPLES
    mmtier receive --listen 7000 --dir /mnt/pmem/capsules
)";

constexpr const char kClone[] = R"(NAME
    mmtier clone - start thin clones of a capsule

SYNOPSIS
    mmtier clone CAPSULE [--count N] [--port-map FROM:TO[,FROM:TO...]]
                 [--netns NAME[,NAME...]] [--dir DIR] [--json]

DESCRIPTION
    Starts N processes from one capsule, each detached, in a PID
    namespace of its own where it has the capsule's PID; the process the
    capsule was taken of may go on running.  A clone's heap (the memory
    libmmtier placed) is not copied: its pages are mapped privately from
    the capsule's files, shared by every clone until one writes a page,
    which then becomes that clone's own (copy on write).  Ten clones of a
    program holding 1 GiB use a little more than 1 GiB together (see PSS
    in /proc/PID/smaps_rollup), and each starts in about the time its
    descriptors and threads take, whatever its size.  Memory outside the
    heap (thread stacks, the C library's own) is copied per clone.

    Listening sockets would clash: --port-map moves each port FROM the
    capsule listened on to TO for the first clone, TO+1 for the second,
    and so on; --netns makes each clone's sockets in a network namespace
    (one for all, or one per clone: a name made by `ip netns add`, or a
    path such as /proc/PID/ns/net).

    The first clone is checked as mmtier restore checks a capsule,
    checksums included; the others reuse that check.  All or nothing:
    if a clone cannot start, those this command started are ended and it
    exits 1 with that clone's reason.  The capsule's files stay in use
    while clones run; deleting the capsule frees its space only when the
    last clone ends.  A clone takes no periodic snapshots of its own
    (MMTIER_SNAPSHOT_EVERY), which would be named as the original's.

OPTIONS
    --count N
        Start N clones (1 to 1000; default 1, or one per --netns name).
    --port-map FROM:TO[,FROM:TO...]
        Clone K (from 1) listens on port TO+K-1 where the capsule's
        process listened on FROM.
    --netns NAME[,NAME...]
        The network namespace of every clone, or of each in turn.  Only
        its owner may enter one (root for those of ip netns).
    --dir DIR
        The capsule directory for a CAPSULE given by name.
    --json
        Print the clones as JSON: clone, pid, ports, netns, start_seconds.
    -h, --help
        Print this manual and exit.

EXIT STATUS
    0    Every clone runs; one line per clone on stdout: its host PID,
         ports and start time.
    1    An error, one line on stderr; no clone of this command is left
         running.
    2    Invalid usage.

ENVIRONMENT
    MMTIER_SNAPSHOT_DIR
        The capsule directory for a CAPSULE given by name (--dir wins).

EXAMPLES
    mmtier clone redis-1 --count 10 --port-map 6379:7001
        Ten clones of redis-1 on ports 7001 to 7010.
    ip netns add c1; ip netns add c2
    mmtier clone redis-1 --netns c1,c2
        Two clones, each on port 6379 of its own namespace.
)";

constexpr const char kCapsule[] = R"(NAME
    mmtier capsule - a capsule as one tar stream, to move it to another host

SYNOPSIS
    mmtier capsule pack CAPSULE [--dir DIR] [-o FILE]
    mmtier capsule unpack [FILE|-] [--dir DIR]

DESCRIPTION
    pack writes a durable capsule as a tar stream (GNU tar, holes kept) to
    FILE or to standard output (not to a terminal).  The stream is
    self-contained: the earlier capsules' mem files and the PMem files the
    capsule refers to are in its directory as hard links, and go in with
    it.

    unpack reads such a stream (FILE, or standard input) into the capsule
    directory: first into a private directory there, where it must be one
    NAME.mmtcap holding nothing but a capsule's files, whose manifest
    parses and is durable and whose every checksum matches; only then is
    it renamed to NAME.mmtcap (never over an existing one), and its path
    printed.  Files get the capsule's modes (0700, 0600) and the caller as
    owner.  mmtier restore brings it back on a host with the same
    binaries, libraries and kernel build.

OPTIONS
    --dir DIR
        The capsule directory (default: see mmtier snapshot --help).
    -o FILE
        pack: write to FILE (created, never replaced) instead of stdout.
    -h, --help
        Print this manual and exit.

EXIT STATUS
    0    Done.
    1    An error, one line on stderr (not a durable capsule, a damaged
         stream, a checksum that does not match, a name taken); nothing
         is left behind.
    2    Invalid usage.

ENVIRONMENT
    MMTIER_SNAPSHOT_DIR
        The capsule directory, as for mmtier snapshot.

EXAMPLES
    mmtier capsule pack redis-1 | ssh host2 mmtier capsule unpack
    ssh host2 mmtier restore redis-1 --detach
)";

constexpr const char kRestore[] = R"(NAME
    mmtier restore - bring a process back from a snapshot capsule

SYNOPSIS
    mmtier restore CAPSULE [--dir DIR]
                   [--detach [--keep-stdio] [--pid-file PATH]
                    [--status-file PATH]]
                   [--pid-namespace] [--verify full|meta]
                   [--lazy [--fill-rate MIB]] [--clone]
                   [--port-map FROM:TO,...] [--netns NAME]
    mmtier restore --latest [PREFIX] [--dir DIR] [OPTIONS]
    mmtier restore --latest [PREFIX] [--dir DIR] --or-run PROGRAM [ARG...]

DESCRIPTION
    Starts the process a capsule holds again, from the instant of the
    snapshot: every memory mapping at its address and protection, every
    thread with its registers, signal mask, thread pointer, robust futex
    list, rseq registration and name, the signal dispositions, interval
    timers, resource limits, umask and working directory.  The process
    keeps its PID and thread IDs: in this PID namespace while they are
    all free there and the command may give them (root, or
    CAP_CHECKPOINT_RESTORE); in a container's PID namespace without that
    capability, when every ID is still to come (the ones before it are
    used up in order); else in a new PID namespace (with a user namespace
    of its own when not run as root, where the user is itself).  Its
    parent, a small supervisor (or the namespace's init), forwards
    SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to it.  When
    the capsule's PID is this command's own (the first process of a new
    container whose program was its first), the command becomes the
    process itself: no supervisor, always eager.
    Its standard input, output and error are this command's.  A program
    that took the snapshot itself sees mmtier_snapshot() return
    MMTIER_SNAPSHOT_RESTORED.

    Before anything starts, the capsule is checked, and the restore is
    refused with one line if: it is not the user's (root may restore any),
    its manifest is damaged, it is incomplete or failed, it was not synced
    and the machine rebooted, it was taken on another kernel build (the
    vDSO differs), a mapped file (executable, library) changed or is gone
    (a file at another inode, as in a new container or on another host,
    counts as the same when its size and ELF build id are, or its size,
    modification time and first and last 64 KiB),
    the process it was taken of still runs, or (--verify full, the
    default) a checksum of its memory does not match.

    CAPSULE is a path, or a name in the capsule directory (see mmtier
    snapshot --help).

OPTIONS
    --dir DIR       The capsule directory for a CAPSULE given by name.
    --detach        Print the restored process's host PID once it runs
                    and exit, leaving it running, its standard streams
                    on /dev/null.
    --keep-stdio    With --detach: the restored process keeps this
                    command's standard streams instead of /dev/null.
    --pid-file PATH With --detach: write the host PID to PATH (replaced
                    whole) instead of standard output.
    --status-file PATH
                    With --detach: when the restored process ends, write
                    how to PATH: "exit N" or "signal N" (its supervisor,
                    init, ends with N or 128 + N, which cannot tell an
                    exit status of 129 from SIGHUP).
    --replace PID   End the running process PID, the capsule's (as it
                    sees itself), once every check has passed, and restore
                    in its place (what mmtier rollback does).
    --clone         A thin clone beside the capsule's process, which may
                    still run: always in a PID namespace of its own, its
                    heap mapped from the capsule, shared until written
                    (what mmtier clone does; never --lazy).
    --port-map FROM:TO,...
                    Bind the sockets the capsule had on port FROM to TO.
    --netns NAME    Make the descriptors in network namespace NAME (a
                    name of ip netns, or a path).
    --stopped       With --detach: the restored process stops (SIGSTOP)
                    before any of its threads runs the program; it goes
                    on at SIGCONT (which a handler of its own then sees).
    --migrated      The capsule's process is held stopped by mmtier
                    migrate, which ends it once this restore succeeded:
                    its still running is no refusal (what mmtier receive
                    does).
    --pid-namespace Always in a new PID namespace, even as root with the
                    PID and thread IDs free here.
    --latest        Restore the newest durable capsule of the capsule
                    directory (by the time it was taken), of those whose
                    names start with PREFIX when given (auto-PID- for the
                    periodic snapshots of process PID): after a reboot,
                    what mmtier run --autosave would have restored.
    --or-run PROGRAM [ARG...]
                    With --latest, as a container's command: restore the
                    newest capsule of this command line, or, when there is
                    none or the restore is refused or fails before the
                    program runs, say why in one line and run PROGRAM
                    afresh (exec, same PID).  Restored in place (the
                    command is PID 1), a capsule holds a file
                    restore-attempt until the program is ready; one whose
                    marker is left (its restore failed past the point of
                    return, the container restarted) is passed over, with
                    one line; remove the file to try it again.
                    Everything after it is the program and its arguments.
    --verify MODE   full (default): check every checksum of the memory
                    first; meta: only the manifest's.  With --lazy the
                    default checks what is restored before the process
                    runs; the rest is checked as it is filled.
    --lazy          Start the process before its memory is back: its
                    own regions of 2 MiB and more are mapped empty and
                    filled from the capsule while it runs (a page it
                    touches, with its 2 MiB chunk, at once; the rest in
                    the background).  A chunk whose checksum does not
                    match kills the restored processes, with one line,
                    before any of them sees it.  Memory given back
                    (MADV_DONTNEED, munmap) stays zero; mremap and fork
                    during the fill are followed.  Needs CAP_SYS_PTRACE
                    (root) for a userfaultfd that takes faults in system
                    calls and reports forks; without it, one line and an
                    eager restore.  Without --detach, a line when the
                    fill is done.  Not the default: an eager restore
                    checks every checksum before the program runs, so a
                    damaged capsule is refused before anything of the
                    program ran.
    --fill-rate MIB Cap the background fill of --lazy at MIB MiB/s
                    (faults are served at once).

EXIT STATUS
    Without --detach, the restored process's exit status (128 + N when
    signal N killed it).  1 when the restore is refused or fails (nothing
    of the program ran), 2 for invalid usage.

DESCRIPTORS
    Files, directories and devices are reopened at their numbers, flags
    and offsets (the same inode, or the restore is refused); a file the
    process writes, other than a standard stream, is cut back to its size
    at the snapshot.  Pipes and FIFOs come back with their buffered bytes,
    eventfds with their counts, timerfds with their remaining time and
    unread ticks, signalfds, epoll sets with every registration, socket
    pairs with their queues, listening and bound sockets rebound to their
    addresses.  A stream connection to another process comes back closed
    (the program reads its end).  A pipe, socket or terminal on 0, 1 or 2
    to another process becomes this command's (/dev/null with --detach).
    Signals pending for the process come back pending, and those pending
    for a single thread pending for that thread, in order.

    Deleted files, O_TMPFILE files and memfds come back unnamed with
    their bytes as at the snapshot (up to 64 MiB together), a memfd with
    its name and seals.  POSIX timers come back at their ids with the time
    they had left.

LIMITS
    Child processes, more than 64 MiB of unnamed files and more than 32
    signals pending for single threads are not restored: taking such a
    snapshot fails, naming what.

ENVIRONMENT
    MMTIER_SNAPSHOT_DIR
        The capsule directory for a CAPSULE given by name (--dir wins).

EXAMPLES
    mmtier restore redis-1 --detach
    mmtier restore --latest auto-4242- --lazy
        After a reboot: the newest periodic snapshot of process 4242.
    mmtier restore --latest --dir /capsules --or-run redis-server
        A container's command: its Redis back from the newest capsule,
        else a fresh one.
)";

constexpr const char kInject[] = R"(NAME
    mmtier inject - put Kubernetes pods under libmmtier, as their
    annotations ask

SYNOPSIS
    mmtier inject [-f FILE|-] [-o FILE] [--lib-dir DIR] [--agent-dir DIR]
    mmtier inject --webhook [ADDRESS]:PORT --tls-cert FILE --tls-key FILE

DESCRIPTION
    Reads Kubernetes YAML (several documents, Lists too) and rewrites every
    Pod, and the pod template of every Deployment, StatefulSet, DaemonSet,
    ReplicaSet, ReplicationController, Job and CronJob, whose mmtier.io/
    annotations ask for it; everything else passes through unchanged.  To
    each chosen container it adds LD_PRELOAD=/opt/mmtier/lib/libmmtier.so
    (first; the container's own entries kept), the MMTIER_* variables of
    the annotations, and read-only hostPath mounts of the node's library
    file (installed there by the node agent's DaemonSet,
    deploy/kubernetes) and of the agent's socket directory.  The pod waits
    in ContainerCreating until its node has the library.  Offline, like
    istioctl kube-inject (or in the cluster, with --webhook):

        mmtier inject -f app.yaml | kubectl apply -f -

    Running it again on its own output changes nothing; after a change of
    annotations it replaces what it added before (recorded in the
    annotation mmtier.io/injected).  Annotation values are checked as the
    library checks its variables: a bad one is an error naming it, and
    nothing is written.

ANNOTATIONS
    On the pod (a workload's pod template), or on the workload itself as a
    default for its template (not seen by --webhook, which sees pods).
    mmtier.io/inject: "true" | "false"
        "true" injects with the library's defaults; "false" never injects
        (and takes an earlier injection out).  Any annotation below also
        asks for injection.
    mmtier.io/dram-ratio: "D:P"          MMTIER_DRAM_RATIO
    mmtier.io/dram-limit: SIZE|none      MMTIER_DRAM_LIMIT
    mmtier.io/pmem-limit: SIZE|none      MMTIER_PMEM_LIMIT
    mmtier.io/policy: latency|bandwidth|dram-first
                                         MMTIER_POLICY (latency: ratio)
    mmtier.io/class: guaranteed|burstable|best-effort
                                         MMTIER_QOS_CLASS
    mmtier.io/guaranteed-dram: SIZE      MMTIER_QOS_DRAM (guaranteed only)
    mmtier.io/weight: 1..10000           MMTIER_QOS_WEIGHT
    mmtier.io/snapshot-every: DUR        MMTIER_SNAPSHOT_EVERY
    mmtier.io/snapshot-keep: N           MMTIER_SNAPSHOT_KEEP
    mmtier.io/migrate-mbps: N            MMTIER_MIGRATE_MBPS
    mmtier.io/log: error|warn|info|debug MMTIER_LOG
    mmtier.io/pmem-volume: VOLUME
        A volume of the pod (a PMem-CSI volume, a hostPath on a DAX file
        system) mounted at /mnt/mmtier/pmem for the PMem tier
        (MMTIER_PMEM_PATH).  Without it the library's default applies
        (a CPU-less NUMA node if there is one, else /dev/shm, which a
        container limits to 64 MiB by default).
    mmtier.io/snapshot-volume: VOLUME
        A volume (a persistent volume claim, a StatefulSet's claim
        template) mounted at /var/lib/mmtier/capsules for the snapshot
        capsules (MMTIER_SNAPSHOT_DIR).  The same volume as pmem-volume
        puts the capsules in /mnt/mmtier/pmem/capsules, on the PMem
        tier's own file system, where a snapshot links the tier's file
        instead of copying it.
    mmtier.io/restore: latest|off
        latest: the container comes back from the newest capsule on its
        snapshot-volume when it starts (restarted, or its pod rescheduled
        with that volume): its command becomes
        /opt/mmtier/bin/mmtier restore --latest --dir CAPSULES --or-run
        COMMAND..., which restores the program as the container's first
        process, or, with no capsule or one that cannot be restored (a
        new image), says why and runs COMMAND afresh.  Needs
        snapshot-volume (the pod's own: a StatefulSet's claim template)
        and the container's command in the spec; mounts the node's
        mmtier command (--bin-dir).  off (default): nothing.
    mmtier.io/userfaultfd: node|profile|capability
        What lets the container move pages (userfaultfd, which container
        runtimes' seccomp profiles refuse): node (default) adds nothing;
        profile the seccomp profile mmtier-tiering.json the DaemonSet
        installs; capability that and SYS_PTRACE (root containers only).
    mmtier.io/containers: "NAME,..."
        Only these containers (default: every container; init containers
        never).
    SIZE: 512M, 4G, or a Kubernetes quantity 4Gi (binary units: 4G and
    4Gi are both 4 GiB).  DUR: 30s, 10m, 1h (1s to 24h).

OPTIONS
    -f, --filename FILE  The YAML to read (default: standard input).
    -o, --output FILE    Where to write it (default: standard output).
    --lib-dir DIR        The node's directory of libmmtier.so
                         (default /opt/mmtier/lib).
    --agent-dir DIR      The node's directory of the agent's socket
                         (default /run/mmtier).
    --bin-dir DIR        The node's directory of the mmtier command, for
                         mmtier.io/restore (default /opt/mmtier/bin).
    --webhook [ADDRESS]:PORT
                         Serve the same as a mutating admission webhook
                         over HTTPS instead: POST /mutate takes an
                         AdmissionReview (admission.k8s.io/v1); a Pod
                         being created whose annotations ask for it is
                         answered with a JSON patch giving what the
                         offline command writes, one with a bad
                         annotation is refused with its message, any
                         other request is allowed unchanged.  GET
                         /healthz answers ok.  deploy/kubernetes/webhook
                         deploys it.
    --tls-cert FILE, --tls-key FILE
                         --webhook: the server's certificate and key
                         (PEM).
    -h, --help           Print this manual and exit.

LIMITS
    The library is the node's build: the container's C library must be
    glibc 2.35 or later (Debian 12, Ubuntu 22.04, Fedora 36 and later);
    a musl image (Alpine) or glibc 2.34 (UBI 9) cannot load it, and the
    program would not start.  Give such pods mmtier.io/inject: "false",
    or build them on the mmtier image (deploy/container).  A container
    that sets LD_PRELOAD with valueFrom, or sets an MMTIER_* variable
    differently from its annotation, is an error.

EXIT STATUS
    0 on success; 1 on an error (invalid YAML, a bad annotation, a volume
    that the pod does not have), reported in one line on stderr; 2 on
    invalid usage; 127 when python3 cannot be found.  It needs python3
    and its yaml module (Debian: python3-yaml).

EXAMPLES
    mmtier inject -f deploy/kubernetes/examples/redis-hostpath.yaml
    kubectl get deploy web -o yaml | mmtier inject | kubectl apply -f -
)";

}  // namespace

std::string_view help_text(std::string_view topic) {
  if (topic.empty()) return kMain;
  if (topic == "run") return kRun;
  if (topic == "stat") return kStat;
  if (topic == "top") return kTop;
  if (topic == "plot") return kPlot;
  if (topic == "snapshot") return kSnapshot;
  if (topic == "restore") return kRestore;
  if (topic == "rollback") return kRollback;
  if (topic == "clone") return kClone;
  if (topic == "migrate") return kMigrate;
  if (topic == "receive") return kReceive;
  if (topic == "capsule") return kCapsule;
  if (topic == "inject") return kInject;
  return {};
}

const char *version_string() { return MMTIER_VERSION; }

}  // namespace mmtier::cli
