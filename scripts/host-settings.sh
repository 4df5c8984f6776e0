#!/usr/bin/env bash
# Sets, as root, the kernel settings a Worker requires of its host, where they differ
# (enclave.runner: open_files_problem, kernel_log_problem; docs/threat-model.md):
# - fs.file-max to its maximum, as systemd does at boot: a run holds files open past
#   its descriptors (a mapping of each), bounded by its memory alone;
# - debug.exception-trace, vm.oom_dump_tasks and kernel.print-fatal-signals to 0, and
#   kernel.seccomp.actions_logged without the kills: the kernel's log of a run's faults,
#   of the signals it dies of, of its tasks at its memory limit and of its calls the
#   filter kills says what the function chooses, to the host;
# - kernel.core_pattern, where it pipes cores to a crash helper or sends them to a socket
#   (apport's, systemd-coredump's: "|…", "@…"), to the kernel's default, core: the kernel
#   logs each dump of a run it aborts (RLIMIT_CORE 1) with the task's name. A file
#   pattern of the site's own stays as it is (a run dumps no core there either).
# Written to /proc/sys directly (a Debian base has no sysctl), until the next boot.
# Where one cannot be set (a container's read-only /proc/sys), it says so, and a Worker
# refuses the host by name (run-isolation).
#
#   scripts/host-settings.sh [--persist]
#
# --persist also writes them to /etc/sysctl.d/60-cleanroom.conf, which systemd-sysctl
# (or `sysctl --system`) applies at every boot; a later file there that sets one of them
# otherwise wins, and a Worker then refuses the host again, by name.
# CLEANROOM_HOST_ROOT (tests only) puts every path below a directory of the test's own.
set -uo pipefail
root="${CLEANROOM_HOST_ROOT:-}"
persist=""
for argument in "$@"; do
  case "$argument" in
    --persist) persist=1 ;;
    *) echo "usage: $0 [--persist]" >&2; exit 2 ;;
  esac
done
SETTINGS=(
  "fs.file-max=9223372036854775807"
  "debug.exception-trace=0"
  "vm.oom_dump_tasks=0"
  "kernel.print-fatal-signals=0"
  "kernel.seccomp.actions_logged=trap errno user_notif trace log"
)
setting() {  # NAME VALUE
  local path="$root/proc/sys/${1//.//}"
  [ -e "$path" ] || return 0  # a kernel without it logs nothing of the kind
  [ "$(cat "$path")" = "$2" ] && return 0
  if ! printf '%s\n' "$2" 2>/dev/null > "$path"; then
    echo "warning: cannot set $1 to '$2' here: a Worker refuses this host (run-isolation)" >&2
  fi
}
for pair in "${SETTINGS[@]}"; do
  setting "${pair%%=*}" "${pair#*=}"
done
core_pattern="$root/proc/sys/kernel/core_pattern"
if [ -e "$core_pattern" ]; then
  case "$(cat "$core_pattern")" in
    '|'* | '@'*)
      if ! printf 'core\n' 2>/dev/null > "$core_pattern"; then
        echo "warning: cannot set kernel.core_pattern to 'core' here: a Worker refuses this host (run-isolation)" >&2
      fi ;;
  esac
fi
if [ -n "$persist" ]; then
  directory="$root/etc/sysctl.d"
  file="$directory/60-cleanroom.conf"
  mkdir -p "$directory" || exit 1
  temporary="$(mktemp "$directory/.60-cleanroom.conf.XXXXXX")" || exit 1
  {
    echo "# cleanroom: the kernel settings a Worker requires of its host"
    echo "# (written by scripts/host-settings.sh --persist; docs/threat-model.md)"
    for pair in "${SETTINGS[@]}"; do
      name="${pair%%=*}"
      if [ -e "$root/proc/sys/${name//.//}" ]; then
        echo "$name = ${pair#*=}"
      else  # "-": a kernel without it logs nothing of the kind; not an error at boot
        echo "-$name = ${pair#*=}"
      fi
    done
    # after any crash reporter's own file (systemd-coredump's 50-coredump.conf); a site's
    # file pattern is its own to keep
    if [ -e "$core_pattern" ] && [ "$(cat "$core_pattern")" = "core" ]; then
      echo "kernel.core_pattern = core"
    fi
  } > "$temporary"
  if ! { chmod 0644 "$temporary" && mv -f "$temporary" "$file"; }; then
    rm -f "$temporary"
    echo "error: cannot write $file" >&2
    exit 1
  fi
  echo "kept across reboots in $file"
fi
