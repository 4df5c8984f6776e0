#!/usr/bin/env bash
# Sets, as root, the kernel settings a Worker requires of its host, where they differ
# (enclave.runner: open_files_problem, kernel_log_problem; docs/threat-model.md):
# - fs.file-max to its maximum, as systemd does at boot: a run holds files open past
#   its descriptors (a mapping of each), bounded by its memory alone;
# - debug.exception-trace, vm.oom_dump_tasks and kernel.print-fatal-signals to 0, and
#   kernel.seccomp.actions_logged without the kills: the kernel's log of a run's faults,
#   of the signals it dies of, of its tasks at its memory limit and of its calls the
#   filter kills says what the function chooses, to the host.
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
  } > "$temporary"
  if ! { chmod 0644 "$temporary" && mv -f "$temporary" "$file"; }; then
    rm -f "$temporary"
    echo "error: cannot write $file" >&2
    exit 1
  fi
  echo "kept across reboots in $file"
fi
