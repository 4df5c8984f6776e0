#!/usr/bin/env bash
# Sets, as root, the kernel settings a Worker requires of its host, where they differ
# (enclave.runner: open_files_problem, kernel_log_problem; docs/threat-model.md):
# - fs.file-max to its maximum, as systemd does at boot: a run holds files open past
#   its descriptors (a mapping of each), bounded by its memory alone;
# - debug.exception-trace and vm.oom_dump_tasks to 0, and kernel.seccomp.actions_logged
#   without the kills: the kernel's log of a run's faults, of its tasks at its memory
#   limit and of its calls the filter kills says what the function chooses, to the host.
# Written to /proc/sys directly (a Debian base has no sysctl). Where one cannot be set
# (a container's read-only /proc/sys), it says so, and a Worker refuses the host by name
# (run-isolation); to keep them across reboots, put them in /etc/sysctl.d/.
set -uo pipefail
setting() {  # NAME VALUE
  local path="/proc/sys/${1//.//}"
  [ -e "$path" ] || return 0  # a kernel without it logs nothing of the kind
  [ "$(cat "$path")" = "$2" ] && return 0
  printf '%s\n' "$2" 2>/dev/null > "$path" ||
    echo "warning: cannot set $1 to '$2' here: a Worker refuses this host (run-isolation)" >&2
}
setting fs.file-max 9223372036854775807
setting debug.exception-trace 0
setting vm.oom_dump_tasks 0
setting kernel.seccomp.actions_logged "trap errno user_notif trace log"
