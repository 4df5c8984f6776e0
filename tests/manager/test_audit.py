"""The audit log: hash-chained, append-only; any change to a stored entry is found."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete, update
from sqlalchemy.orm import Session, sessionmaker

from cleanroom.cli.main import main
from cleanroom.manager import audit
from cleanroom.manager.database import AuditEntry, AuditHead, open_database
from cleanroom.manager.settings import default_database_url


@pytest.fixture
def sessions(database_url: str | None, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    made = open_database(database_url or default_database_url(tmp_path))
    yield made
    made.kw["bind"].dispose()


def _append(sessions: sessionmaker[Session], count: int) -> None:
    for index in range(count):
        with sessions() as session:
            audit.record(session, "client-1", "room.deployed", f"room-{index}", n=index)
            session.commit()


def _tamper(sessions: sessionmaker[Session], statement: object) -> None:
    with sessions() as session:
        session.execute(statement)  # type: ignore[call-overload]
        session.commit()


def test_an_untouched_log_verifies_and_each_entry_chains_to_the_one_before(
    sessions: sessionmaker[Session],
) -> None:
    _append(sessions, 5)
    with sessions() as session:
        entries = list(audit.entries(session))
        verdict = audit.verify(session)
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0].prev_hash == audit.GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
    assert json.loads(entries[3].details) == {"n": 3}
    assert verdict.ok and verdict.checked == 5 and verdict.head == entries[-1].hash


def test_an_empty_log_verifies(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        verdict = audit.verify(session)
    assert verdict.ok and verdict.checked == 0 and verdict.head == audit.GENESIS


def test_a_changed_entry_is_found(sessions: sessionmaker[Session]) -> None:
    _append(sessions, 5)
    _tamper(sessions, update(AuditEntry).where(AuditEntry.seq == 3).values(actor="someone-else"))
    with sessions() as session:
        verdict = audit.verify(session)
    assert not verdict.ok and verdict.broken_at == 3
    assert verdict.problem is not None and verdict.problem.startswith("audit-hash: entry 3")


def test_a_changed_entry_with_its_hash_recomputed_breaks_the_next_link(
    sessions: sessionmaker[Session],
) -> None:
    _append(sessions, 5)
    with sessions() as session:
        entry = session.get_one(AuditEntry, 3)
        entry.target = "room-forged"
        entry.hash = audit.entry_hash(
            entry.prev_hash, entry.seq, entry.time, entry.actor, entry.action, entry.target,
            entry.details,
        )  # fmt: skip
        session.commit()
    with sessions() as session:
        verdict = audit.verify(session)
    assert not verdict.ok and verdict.broken_at == 4
    assert verdict.problem is not None and verdict.problem.startswith("audit-chain: entry 4")


def test_a_removed_entry_is_found(sessions: sessionmaker[Session]) -> None:
    _append(sessions, 5)
    _tamper(sessions, delete(AuditEntry).where(AuditEntry.seq == 2))
    with sessions() as session:
        verdict = audit.verify(session)
    assert not verdict.ok and verdict.broken_at == 2
    assert verdict.problem is not None and verdict.problem.startswith("audit-sequence:")


def test_entries_removed_from_the_end_are_found(sessions: sessionmaker[Session]) -> None:
    _append(sessions, 5)
    _tamper(sessions, delete(AuditEntry).where(AuditEntry.seq >= 4))
    with sessions() as session:
        verdict = audit.verify(session)
    assert not verdict.ok and verdict.checked == 3
    assert verdict.problem is not None and verdict.problem.startswith("audit-head:")


def test_a_changed_head_is_found(sessions: sessionmaker[Session]) -> None:
    _append(sessions, 2)
    _tamper(sessions, update(AuditHead).values(seq=7))
    with sessions() as session:
        verdict = audit.verify(session)
    assert not verdict.ok
    assert verdict.problem is not None and verdict.problem.startswith("audit-head:")


def test_an_entry_rolled_back_with_its_change_leaves_no_trace(
    sessions: sessionmaker[Session],
) -> None:
    _append(sessions, 1)
    with sessions() as session:
        audit.record(session, "client-1", "room.deployed", "never")
        session.rollback()
    _append(sessions, 1)
    with sessions() as session:
        assert [e.target for e in audit.entries(session)] == ["room-0", "room-0"]
        assert audit.verify(session).ok


def test_concurrent_appends_make_one_unbroken_chain(sessions: sessionmaker[Session]) -> None:
    errors: list[BaseException] = []

    def writer(worker: int) -> None:
        try:
            for index in range(10):
                with sessions() as session:
                    audit.record(session, f"client-{worker}", "token.issued", f"{worker}-{index}")
                    session.commit()
        except Exception as error:  # noqa: BLE001 (reported below)
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with sessions() as session:
        verdict = audit.verify(session)
        targets = sorted(e.target for e in audit.entries(session))
    assert verdict.ok and verdict.checked == 60
    assert targets == sorted(f"{w}-{i}" for w in range(6) for i in range(10))


def test_admin_audit_prints_verifies_and_fails_on_a_changed_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sessions = open_database(default_database_url(tmp_path))
    _append(sessions, 3)
    admin = ["admin", "--data-dir", str(tmp_path), "audit"]
    assert main([*admin, "--verify"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0].split() == [
        "SEQ", "TIME", "ACTOR", "ACTION", "TARGET", "DETAILS",
    ]  # fmt: skip
    assert "room-2" in captured.out
    assert "audit log verified: 3 entries, newest hash" in captured.err

    assert main([*admin, "--json", "--after", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [3]

    _tamper(sessions, update(AuditEntry).where(AuditEntry.seq == 2).values(details='{"n":9}'))
    sessions.kw["bind"].dispose()
    assert main([*admin, "--verify"]) == 1
    captured = capsys.readouterr()
    assert "the audit log does not verify: audit-hash: entry 2" in captured.err


def test_admin_audit_shows_nothing_a_terminal_acts_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A room's failure, in its entry's details, is what a Controller said: JSON escapes
    C0 controls (ESC) but not C1 (CSI, U+009B) nor bidirectional overrides."""
    sessions = open_database(default_database_url(tmp_path))
    with sessions() as session:
        audit.record(session, "cleanroom-manager", "room.failed", "room:r",
                     reason="\x9b2K\x9b32mverified\u202e \x1b[0m")  # fmt: skip
        session.commit()
    sessions.kw["bind"].dispose()
    assert main(["admin", "--data-dir", str(tmp_path), "audit"]) == 0
    out = capsys.readouterr().out
    assert "room.failed" in out and "verified" in out
    assert not any(char in out for char in ("\x9b", "\u202e", "\x1b")), repr(out)
