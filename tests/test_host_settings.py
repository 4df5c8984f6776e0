"""scripts/host-settings.sh: the kernel settings a Worker requires of its host, set now
and, with --persist, kept across reboots in /etc/sysctl.d/. Every run here is below a
directory of the test's own (CLEANROOM_HOST_ROOT): nothing of this host is read or set."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from cleanroom.enclave import runner

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "host-settings.sh"

# The kernel's defaults, which a Worker refuses (h26's red team)
DEFAULTS = {
    "fs/file-max": "2466239",
    "debug/exception-trace": "1",
    "vm/oom_dump_tasks": "1",
    "kernel/print-fatal-signals": "1",  # a host being debugged
    "kernel/seccomp/actions_logged": "kill_process kill_thread trap errno user_notif trace log",
    # Ubuntu's (apport): a pipe, whose aborted dumps the kernel logs by name (h35)
    "kernel/core_pattern": "|/usr/share/apport/apport -p%p -s%s -c%c -d%d -P%P -u%u -g%g -- %E",
}
MEMINFO = "MemTotal:       24662392 kB\n"


def fake_host(root: Path, settings: dict[str, str]) -> None:
    for name, value in settings.items():
        path = root / "proc" / "sys" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value + "\n")


def host_settings(root: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    assert root.is_absolute() and root != Path("/")  # never this host's own /proc/sys
    # nor a script that ignores the root and would set this host's (an older one)
    assert "CLEANROOM_HOST_ROOT" in SCRIPT.read_text()
    return subprocess.run(
        ["bash", str(SCRIPT), *arguments],
        env={**os.environ, "CLEANROOM_HOST_ROOT": str(root)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def worker_problems(root: Path, monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """What a Worker's start checks say of the host below ``root``."""
    sys_dir = root / "proc" / "sys"
    (root / "meminfo").write_text(MEMINFO)
    monkeypatch.setattr(runner, "FILE_MAX", sys_dir / "fs" / "file-max")
    monkeypatch.setattr(runner, "MEMINFO", root / "meminfo")
    monkeypatch.setattr(
        runner,
        "KERNEL_LOG_SETTINGS",
        {name: sys_dir / name.replace(".", "/") for name in runner.KERNEL_LOG_SETTINGS},
    )
    monkeypatch.setattr(
        runner, "SECCOMP_ACTIONS_LOGGED", sys_dir / "kernel" / "seccomp" / "actions_logged"
    )
    monkeypatch.setattr(runner, "CORE_PATTERN", sys_dir / "kernel" / "core_pattern")
    return [runner.open_files_problem(), runner.kernel_log_problem()]


def boot(conf: Path, root: Path) -> None:
    """What systemd-sysctl does with the file at boot, on a host with the kernel's defaults."""
    fake_host(root, DEFAULTS)
    for line in conf.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.partition("=")
        path = root / "proc" / "sys" / name.strip().lstrip("-").replace(".", "/")
        if path.exists() or not name.startswith("-"):
            path.write_text(value.strip() + "\n")


def test_the_settings_are_set_until_the_next_boot_and_kept_nowhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_host(tmp_path, DEFAULTS)
    assert all(worker_problems(tmp_path, monkeypatch))  # the kernel's defaults: refused
    done = host_settings(tmp_path)
    assert done.returncode == 0, done.stderr
    assert worker_problems(tmp_path, monkeypatch) == [None, None]
    assert (tmp_path / "proc" / "sys" / "kernel" / "print-fatal-signals").read_text() == "0\n"
    assert (tmp_path / "proc" / "sys" / "kernel" / "core_pattern").read_text() == "core\n"
    assert not (tmp_path / "etc").exists()


def test_persist_keeps_them_across_reboots_in_sysctl_d(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The settings lasted until the next boot, and then a Worker refused the host
    (left open at the last stop): --persist writes them where systemd-sysctl applies
    them at every boot, and the host after a boot is one a Worker accepts."""
    fake_host(tmp_path, DEFAULTS)
    done = host_settings(tmp_path, "--persist")
    assert done.returncode == 0, done.stderr
    assert worker_problems(tmp_path, monkeypatch) == [None, None]  # now
    conf = tmp_path / "etc" / "sysctl.d" / "60-cleanroom.conf"
    assert f"kept across reboots in {conf}" in done.stdout
    assert [line for line in conf.read_text().splitlines() if not line.startswith("#")] == [
        "fs.file-max = 9223372036854775807",
        "debug.exception-trace = 0",
        "vm.oom_dump_tasks = 0",
        "kernel.print-fatal-signals = 0",
        "kernel.seccomp.actions_logged = trap errno user_notif trace log",
        "kernel.core_pattern = core",
    ]
    assert conf.stat().st_mode & 0o777 == 0o644
    assert [path.name for path in conf.parent.iterdir()] == ["60-cleanroom.conf"]
    rebooted = tmp_path / "rebooted"
    boot(conf, rebooted)
    assert worker_problems(rebooted, monkeypatch) == [None, None]  # after the next boot
    again = host_settings(tmp_path, "--persist")  # run again: the same file, nothing else
    assert again.returncode == 0, again.stderr
    assert [path.name for path in conf.parent.iterdir()] == ["60-cleanroom.conf"]


def test_persist_on_a_kernel_without_a_setting_marks_it_optional(tmp_path: Path) -> None:
    """A kernel without debug.exception-trace (not x86) logs no such fault line: the
    file names it with "-", which systemd-sysctl and procps skip where it is absent."""
    fake_host(tmp_path, {k: v for k, v in DEFAULTS.items() if k != "debug/exception-trace"})
    done = host_settings(tmp_path, "--persist")
    assert done.returncode == 0, done.stderr
    conf = (tmp_path / "etc" / "sysctl.d" / "60-cleanroom.conf").read_text()
    assert "\n-debug.exception-trace = 0\n" in conf
    assert "\nvm.oom_dump_tasks = 0\n" in conf


def test_an_unknown_option_changes_nothing(tmp_path: Path) -> None:
    fake_host(tmp_path, DEFAULTS)
    done = host_settings(tmp_path, "--persit")
    assert done.returncode == 2
    assert "usage:" in done.stderr
    assert (tmp_path / "proc" / "sys" / "vm" / "oom_dump_tasks").read_text() == "1\n"
    assert not (tmp_path / "etc").exists()


@pytest.mark.parametrize("persist", [(), ("--persist",)])
def test_a_sites_own_core_file_pattern_stays(tmp_path: Path, persist: tuple[str, ...]) -> None:
    """A file pattern dumps no core of a run (RLIMIT_CORE 1) and logs nothing: the
    script leaves it, and keeps no pattern of its own across reboots."""
    fake_host(tmp_path, {**DEFAULTS, "kernel/core_pattern": "/var/crash/core.%e.%p"})
    done = host_settings(tmp_path, *persist)
    assert done.returncode == 0, done.stderr
    pattern = tmp_path / "proc" / "sys" / "kernel" / "core_pattern"
    assert pattern.read_text() == "/var/crash/core.%e.%p\n"
    if persist:
        conf = (tmp_path / "etc" / "sysctl.d" / "60-cleanroom.conf").read_text()
        assert "core_pattern" not in conf
