"""What one run may use at most on this compute server: the operator's resource ceiling.

A spec's ``resources`` are part of its Work-ID, so every party agreed to them; the
host still decides what it hands out. A deploy whose resources exceed the ceiling is
refused before any Worker starts (problem detail with check ``resources``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

from cleanroom.protocol.spec import Resources

WEEK_S = 7 * 86400


def _memory_mib() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") >> 20


@dataclass(frozen=True)
class ResourceCeiling:
    memory_mib: int
    timeout_s: int
    cpu_s: int
    processes: int
    disk_mib: int  # a run's outputs/ and /tmp live in memory (a tmpfs)

    @classmethod
    def of_host(cls) -> ResourceCeiling:
        """This machine: all its memory, half of it for a run's files, a week of time."""
        memory = _memory_mib()
        return cls(
            memory_mib=memory,
            timeout_s=WEEK_S,
            cpu_s=WEEK_S * (os.cpu_count() or 1),
            processes=4096,
            disk_mib=max(1, memory // 2),
        )

    def with_overrides(self, overrides: Mapping[str, int]) -> ResourceCeiling:
        """This ceiling with some values set (``--max KEY=VALUE``); ValueError if unknown."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown resource {unknown[0]!r}; one of {', '.join(sorted(known))}")
        for key, value in overrides.items():
            if value < 1:
                raise ValueError(f"{key} must be at least 1, not {value}")
        return replace(self, **overrides)

    def excess(self, resources: Resources) -> list[tuple[str, int, int]]:
        """(resource, ceiling, asked) for every resource the spec asks more of."""
        return [
            (f.name, getattr(self, f.name), getattr(resources, f.name))
            for f in fields(self)
            if getattr(resources, f.name) > getattr(self, f.name)
        ]
