"""The system calls a confined function may not make: a seccomp filter for bubblewrap.

The sandbox's namespaces, uid and capabilities decide what a function can *reach*; this
filter decides how much of the *kernel* it can talk to. A hostile function's way out of
every namespace is a kernel bug, and the bugs cluster in a few interfaces that no data
function needs. Those calls fail with ``EPERM`` before the kernel parses their
arguments; every other call is allowed. Docker's default profile denies most of them
to a container without capabilities too, and the runtimes' libraries (pandas, polars,
pyarrow, DuckDB, scikit-learn) run under this filter in the tests.

The program is built by libseccomp (through ``pyseccomp``) for this machine's
architecture; a call made through another ABI (x32 numbers, or the 32-bit
``int 0x80`` entry on x86-64) does not match it and kills the process. Bubblewrap loads it,
with ``no_new_privs``, just before it executes the function's interpreter
(``--seccomp FD``). Nested user namespaces are refused by bubblewrap itself
(``--disable-userns``), so ``clone`` needs no argument filter here.

Sockets are filtered by address family (:data:`SOCKET_FAMILIES`). The network namespace
confines the internet families to a loopback of the sandbox's own, but not every
family is namespaced: ``AF_VSOCK`` reaches the hypervisor's host (or the guests) from
any namespace, and netlink, packet and the rarer protocol families are kernel code that
a data function never needs.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from collections.abc import Mapping

DENIED: Mapping[str, tuple[str, ...]] = {
    # Kernel interfaces with a long record of privilege escalations, reachable without
    # any capability, and of no use to a function that reads files and writes files.
    "kernel surfaces with a record of escalations": (
        "io_uring_setup", "io_uring_enter", "io_uring_register",
        "keyctl", "add_key", "request_key",
        "bpf", "userfaultfd", "perf_event_open",
        "fanotify_init",  # open to unprivileged processes since Linux 5.13
        # The x86 local descriptor table: 16- and 32-bit segments (Wine, DOSEMU), which
        # no 64-bit runtime uses; its kernel code had a use-after-free (CVE-2017-17053)
        # and an NMI escalation (CVE-2015-5157). Open to any process when the kernel is
        # built with it, as here.
        "modify_ldt",
    ),
    # Linux native AIO: each context it sets up draws on fs.aio-max-nr, one count for the
    # whole host (65,536 by default), which no namespace, cgroup or rlimit divides: one
    # function held all of it with 10 MiB of memory for as long as it ran, and every
    # other process on the host (another room's function, a database) got EAGAIN.
    # Docker allows it; no data runtime uses it (glibc's POSIX aio and the libraries'
    # own I/O are threads and plain reads).
    "host-wide counts": (
        "io_setup", "io_destroy", "io_submit", "io_cancel", "io_getevents", "io_pgetevents",
        # Secret memory (Linux 5.14) takes each of its pages out of the kernel's direct map,
        # which the kernel then maps in smaller pages, for good: one run of 16 processes,
        # 8 MiB each (RLIMIT_MEMLOCK, under its memory limit), split 20 GiB of the host's
        # 1 GiB kernel mappings into 2 MiB and 4 KiB ones, every process on the host slower
        # to reach kernel memory until it reboots. Docker denies it; no data runtime asks.
        "memfd_secret",
    ),
    # What the host's other processes do to the files every run shares (/usr, the
    # runtime): watches are on the file, not on the sandbox's view of it, so a run sees
    # every open and read of them by any other run. One room's function sent another
    # room's, run beside it, its input (37 bytes in a millisecond, not a bit lost) by
    # opening one of two files of the standard library per bit: a channel between rooms
    # past their outputs' recipients, and a view of which modules other runs load.
    # No data runtime watches files (fcntl's F_NOTIFY, the older form, is refused too:
    # FCNTL_DENIED).
    "watching files other runs share": ("inotify_init", "inotify_init1", "inotify_add_watch"),
    # Its own processes only (PID namespace, one uid), but nothing a function needs.
    "reaching into other processes": (
        "ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "pidfd_getfd",
        "kcmp",  # compares kernel objects of two processes: an oracle of kernel pointers
    ),
    # What --disable-userns and the dropped capabilities refuse already: refused here
    # before the kernel parses a mount or a namespace request.
    "namespaces and mounts": (
        "unshare", "setns", "mount", "umount2", "pivot_root", "chroot",
        "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick",
        "mount_setattr",
    ),
    # Execution domains: flags that lay out the programs it starts without ASLR, with
    # readable memory executable, or with page zero mapped (the lever of NULL-pointer
    # kernel exploits). Docker allows the query and the Linux domains only; no data
    # runtime asks either, so the call is refused whole, the query included.
    "layout of the programs it starts": ("personality",),
    # Its I/O priority: a run is niced (supervisor.RUN_NICENESS), and its I/O priority
    # follows (best effort, level 6), but any process may set its own to the first level
    # of best effort, ahead of the enclave services (level 4, from nice 0) on a disk
    # whose scheduler orders by level (BFQ): a function did (h26's red team). Only the
    # setting is refused; ioprio_get stays. No data runtime sets it.
    "its I/O priority": ("ioprio_set",),
    # NUMA placement: denied to unprivileged containers by Docker's default profile.
    "memory placement": (
        "mbind", "set_mempolicy", "get_mempolicy", "set_mempolicy_home_node",
        "migrate_pages", "move_pages",
    ),
    # The machine's administration: each needs a capability the function does not have.
    "administration of the machine": (
        "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
        "reboot", "swapon", "swapoff", "acct", "quotactl", "quotactl_fd", "syslog",
        "iopl", "ioperm", "lookup_dcookie", "name_to_handle_at", "open_by_handle_at",
        "uselib", "ustat", "sysfs", "_sysctl", "settimeofday", "clock_settime",
        "clock_adjtime", "adjtimex", "vhangup", "nfsservctl", "sethostname",
        "setdomainname",
    ),
}  # fmt: skip
"""Every denied call, by why. Each fails with ``EPERM``."""

DENIED_BY_NUMBER: Mapping[str, int] = {
    # Newer than the libseccomp that can name it (Debian 12's 2.5.4 cannot, and a name
    # it cannot place is a filter it refuses to build): denied by the number of the
    # kernel's table common to x86-64 and arm64 (every call from 424 up), with the same
    # reason as its family above. open_tree (denied) with mount_setattr's (denied)
    # attributes, Linux 6.15: without it, the mount API's parsing is one call away.
    "open_tree_attr": 467,
    # The mount API's queries (Linux 6.8): what /proc/self/mountinfo shows of the
    # sandbox's own mounts (tried: nothing of another namespace), through new kernel code
    # no function needs.
    "statmount": 457,
    "listmount": 458,
    # The page cache's state of any file it can open, exactly (Linux 6.5): of the files
    # every run shares, /usr and the runtime, what other runs read or evicted, with no
    # timing to measure. This host's kernel refuses it on a file the caller cannot write
    # (EPERM), as mincore(2) does since Linux 5.0; a kernel without that check answers.
    # No data runtime asks (same reason as "watching files other runs share").
    "cachestat": 451,
}
"""Denied calls libseccomp may not know by name, by their number; each fails with ``EPERM``."""

DENIED_ERRNO = errno.EPERM

FCNTL_DENIED: Mapping[int, str] = {
    # dnotify: a signal when any file of a directory is read, by any process on the host
    # (see "watching files other runs share" above).
    fcntl.F_NOTIFY: "F_NOTIFY",
}
"""fcntl(2) commands a function may not use (``EPERM``); every other command is allowed.
The kernel reads the command's low 32 bits, so they are all it is compared by."""
COMMAND_MASK = 0xFFFF_FFFF

SETSOCKOPT_DENIED: Mapping[tuple[int, int], str] = {
    # Classic BPF programs on a socket: verified, converted and JIT-compiled by the
    # kernel for any unprivileged process (the JIT's branch offsets were an escalation,
    # CVE-2021-29154). The bpf() call is denied above; these are its other way in.
    (socket.SOL_SOCKET, 26): "SO_ATTACH_FILTER",
    (socket.SOL_SOCKET, 51): "SO_ATTACH_REUSEPORT_CBPF",
    # A TCP socket's upper layer protocol: kernel TLS, ESP in TCP, SMC; kTLS had several
    # use-after-frees, one an escalation (CVE-2023-0461). No data function sets one.
    (socket.IPPROTO_TCP, 31): "TCP_ULP",
}
"""setsockopt(2) (level, option) pairs a function may not set (``EPERM``), compared, as
the kernel reads them, in their low 32 bits."""

# Classic BPF programs through seccomp itself: the same converter and JIT as a socket's
# filter (SETSOCKOPT_DENIED), a third way in, and one whose compiled code no cgroup
# divides: a program's JIT image is charged to bpf_jit_limit, one count for the whole
# host (504 MiB here), not to the run's memory. A function that kept its children's
# filters alive by their listener descriptors (SECCOMP_FILTER_FLAG_NEW_LISTENER) held
# 1,000 filters of 4,000 instructions: 54 MiB of the host's count for 38 MiB of its
# memory, so a run under the default 2 GiB can hold all of it for as long as it runs
# (not tried to the end on a shared host). The kernel then refuses every unprivileged
# program (it JITs or refuses: BPF_JIT_ALWAYS_ON), bubblewrap's load of another room's
# filter included, and with it that room's one run.
# No data runtime adds a filter to the sandbox's. The kernel reads the operation and the
# option in 32 bits; seccomp's queries and its strict mode (no program) stay allowed.
SECCOMP_SET_MODE_FILTER = 1
PR_SET_SECCOMP = 22
FILTER_LOADS: Mapping[str, int] = {"seccomp": SECCOMP_SET_MODE_FILTER, "prctl": PR_SET_SECCOMP}
"""Calls whose first argument (compared in its low 32 bits) loads a seccomp program of
the function's own: each fails with ``EPERM``, every other use of the call is allowed."""

# Huge pages of the host's pool (vm.nr_hugepages, vm.nr_overcommit_hugepages): one pool
# for the whole host, which no memory cgroup v1 group (nor v2 without
# memory_hugetlb_accounting) charges, and the run has no hugetlb group. Any process may
# map them (mmap's MAP_HUGETLB, memfd_create's MFD_HUGETLB; shmget's SHM_HUGETLB needs a
# group the function is not in), so a function could hold the whole pool for its run, and
# every database or packet engine on the host that reserved it would find none. This
# host has no pool (mmap says ENOMEM); the flag is refused whatever the host. No data
# runtime asks: their allocators use transparent huge pages, which are ordinary memory.
HUGE_PAGE_FLAGS: Mapping[str, tuple[int, int]] = {
    "mmap": (3, 0x40000),  # its flags argument, MAP_HUGETLB
    "memfd_create": (1, 0x4),  # MFD_HUGETLB
}
"""(argument, bit) of calls that take huge pages from the host's pool: a call with that
bit set fails with ``EPERM``; the bit is tested alone, whatever else is set."""

# futex(FUTEX_WAKE_OP) whose operation shifts by less than 0 or more than 31: the kernel
# masks the shift and logs "futex_wake_op: NAME tries to shift op by N; fix this program",
# NAME 15 bytes of the function's choice and N 12 bits of it, 10 lines every 5 s (its rate
# limit), about 33 B/s to whoever reads the host's kernel log (h30's red team: a run that
# "succeeded" put its input there). Such a call is refused (EPERM) before the kernel logs
# it; FUTEX_WAKE_OP with a shift of 0 to 31, and without one, stays allowed (no current
# runtime's libc uses it). The operation is in the encoded op's bits 28-31 (bit 31:
# FUTEX_OP_OPARG_SHIFT), the shift in bits 12-23, signed: out of 0..31 exactly when one
# of its bits 17-23 is set. The kernel reads both arguments in 32 bits.
FUTEX_WAKE_OP = 5
FUTEX_COMMAND_MASK = 0xFFFF_FE7F  # the kernel's FUTEX_CMD_MASK: less the private, clock flags
FUTEX_OP_OPARG_SHIFT = 1 << 31
FUTEX_SHIFT_OUT_OF_RANGE = tuple(1 << bit for bit in range(17, 24))
"""futex(FUTEX_WAKE_OP) with FUTEX_OP_OPARG_SHIFT and any of these bits set in its
encoded operation (the sixth argument) fails with ``EPERM``: the kernel would log it."""

# A memfd a program is run from (execveat with AT_EMPTY_PATH, or /proc/self/fd/N): the
# other place a function could put a crafted ELF whose loading the kernel logs with its
# name and an address of its choice, with no rate limit (supervisor: the run's tmpfs is
# noexec; h30's red team: 121 lines in 2 s from a memfd). A memfd is made only with
# MFD_NOEXEC_SEAL (Linux 6.3), which takes its execute bits away for good; without it
# memfd_create fails with EPERM (no data runtime makes one).
MFD_NOEXEC_SEAL = 0x8
"""memfd_create(2) without this flag in its second argument fails with ``EPERM``."""

SOCKET_FAMILIES: Mapping[int, str] = {
    socket.AF_UNIX: "AF_UNIX",  # multiprocessing, asyncio's self-pipe, joblib
    socket.AF_INET: "AF_INET",  # the loopback of its own network namespace
    socket.AF_INET6: "AF_INET6",
}
"""The address families a function may open sockets in. ``socket`` and ``socketpair`` in
any other (``AF_VSOCK``, ``AF_NETLINK``, ``AF_PACKET``, ``AF_ALG``, ``AF_XDP``, TIPC, RDS,
CAN, Bluetooth, …, or a family with bits beyond its 32) fail with ``EAFNOSUPPORT``, as on
a kernel built without that family, which every program already handles."""

SOCKET_ERRNO = errno.EAFNOSUPPORT
SOCKET_CALLS = ("socket", "socketpair")

INTERNET_FAMILIES = (socket.AF_INET, socket.AF_INET6)
INTERNET_PROTOCOLS = (0, socket.IPPROTO_TCP)
"""In the internet families a function gets TCP only (``SOCK_STREAM``, protocol 0 or
``IPPROTO_TCP``): its loopback is for the frameworks that talk to their own workers.
Every other socket there fails with ``EPROTONOSUPPORT``, as on a kernel without that
protocol: UDP and ICMP echo (``SOCK_DGRAM``), whose buffers cgroup v1 charges to no
group (a function held 2.4 GiB of UDP buffers under a 256 MiB limit, against a limit
one for the whole host, ``udp_mem``), and SCTP, MPTCP, UDP-Lite, DCCP: kernel code
(some of it loaded on demand) that no data function needs."""
INTERNET_ERRNO = errno.EPROTONOSUPPORT
SOCK_TYPE_MASK = 0xF  # the kernel's: the type's low bits, the rest are flags


def denied_calls() -> list[str]:
    """Every name in :data:`DENIED`, once."""
    return sorted({name for names in DENIED.values() for name in names})


def filter_fd() -> int:
    """A file descriptor (a sealed memfd, at offset 0) holding the compiled filter, for
    ``bwrap --seccomp FD``. The caller closes it once bubblewrap has started.

    Raises ``OSError`` or ``RuntimeError`` when libseccomp is missing or refuses a rule:
    the caller must then not run the function at all.
    """
    import pyseccomp  # loads libseccomp; only the supervisor (root) builds a filter

    program = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    for name in denied_calls():
        program.add_rule(pyseccomp.ERRNO(DENIED_ERRNO), name)
    for number in DENIED_BY_NUMBER.values():
        program.add_rule(pyseccomp.ERRNO(DENIED_ERRNO), number)
    for level, option in SETSOCKOPT_DENIED:
        program.add_rule(
            pyseccomp.ERRNO(DENIED_ERRNO),
            "setsockopt",
            pyseccomp.Arg(1, pyseccomp.MASKED_EQ, COMMAND_MASK, level),
            pyseccomp.Arg(2, pyseccomp.MASKED_EQ, COMMAND_MASK, option),
        )
    for name, operation in FILTER_LOADS.items():
        program.add_rule(
            pyseccomp.ERRNO(DENIED_ERRNO),
            name,
            pyseccomp.Arg(0, pyseccomp.MASKED_EQ, COMMAND_MASK, operation),
        )
    for name, (argument, bit) in HUGE_PAGE_FLAGS.items():
        program.add_rule(
            pyseccomp.ERRNO(DENIED_ERRNO),
            name,
            pyseccomp.Arg(argument, pyseccomp.MASKED_EQ, bit, bit),
        )
    program.add_rule(
        pyseccomp.ERRNO(DENIED_ERRNO),
        "memfd_create",
        pyseccomp.Arg(1, pyseccomp.MASKED_EQ, MFD_NOEXEC_SEAL, 0),
    )
    for bit in FUTEX_SHIFT_OUT_OF_RANGE:
        program.add_rule(
            pyseccomp.ERRNO(DENIED_ERRNO),
            "futex",
            pyseccomp.Arg(1, pyseccomp.MASKED_EQ, FUTEX_COMMAND_MASK, FUTEX_WAKE_OP),
            pyseccomp.Arg(
                5, pyseccomp.MASKED_EQ, FUTEX_OP_OPARG_SHIFT | bit, FUTEX_OP_OPARG_SHIFT | bit
            ),
        )
    for command in FCNTL_DENIED:
        program.add_rule(
            pyseccomp.ERRNO(DENIED_ERRNO),
            "fcntl",
            pyseccomp.Arg(1, pyseccomp.MASKED_EQ, COMMAND_MASK, command),
        )
    # Libseccomp compares all 64 bits of the register, the kernel reads the family's low
    # 32: every value but the allowed ones exactly must be refused, high bits included.
    # So each family below the largest allowed one is refused by number, and everything
    # from there up (any value with a high bit set among them) by one comparison.
    above = max(SOCKET_FAMILIES) + 1
    refused = [family for family in range(above) if family not in SOCKET_FAMILIES]
    for name in SOCKET_CALLS:
        for family in refused:
            program.add_rule(
                pyseccomp.ERRNO(SOCKET_ERRNO), name, pyseccomp.Arg(0, pyseccomp.EQ, family)
            )
        program.add_rule(pyseccomp.ERRNO(SOCKET_ERRNO), name, pyseccomp.Arg(0, pyseccomp.GE, above))
    # TCP only, in the internet families (the family compared exactly: one with a high
    # bit set is refused above). The type is masked as the kernel masks it; the protocol
    # is compared in all 64 bits, so a value with a high bit set is above TCP's.
    most = max(INTERNET_PROTOCOLS)
    for family in INTERNET_FAMILIES:
        internet = pyseccomp.Arg(0, pyseccomp.EQ, family)
        for kind in range(SOCK_TYPE_MASK + 1):
            if kind != socket.SOCK_STREAM:
                program.add_rule(
                    pyseccomp.ERRNO(INTERNET_ERRNO), "socket", internet,
                    pyseccomp.Arg(1, pyseccomp.MASKED_EQ, SOCK_TYPE_MASK, kind),
                )  # fmt: skip
        for protocol in range(most):
            if protocol not in INTERNET_PROTOCOLS:
                program.add_rule(
                    pyseccomp.ERRNO(INTERNET_ERRNO), "socket", internet,
                    pyseccomp.Arg(2, pyseccomp.EQ, protocol),
                )  # fmt: skip
        program.add_rule(
            pyseccomp.ERRNO(INTERNET_ERRNO),
            "socket",
            internet,
            pyseccomp.Arg(2, pyseccomp.GT, most),
        )
    fd = os.memfd_create("cleanroom-seccomp", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        with open(fd, "wb", closefd=False) as handle:
            program.export_bpf(handle)  # libseccomp writes to the descriptor itself
        fcntl.fcntl(
            fd,
            fcntl.F_ADD_SEALS,
            fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL,
        )
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd
