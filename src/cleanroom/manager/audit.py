"""The manager's audit log: append-only, each entry hash-chained to the one before.

An entry says who (``actor``: a client id, ``operator`` for `cleanroom admin`, or
``cleanroom-manager`` for the manager's own actions) did what (``action``) to
what (``target``), when, with a few ``details``. Its hash is

    SHA-256(prev_hash || canonical JSON of {seq, time, actor, action, target, details})

in lowercase hex, where ``prev_hash`` is the previous entry's hash (64 zeros for
the first). :func:`verify` recomputes the chain and names the first entry that
does not match: a row changed, removed or inserted anywhere is found.

The chain detects tampering by whoever can write the database after the fact; it
does not stop the database's owner from rewriting the whole chain from the
changed row on. Copy :func:`newest`'s hash somewhere else (a ticket, a log shipper) to
anchor it (docs/management.md, "Audit log").

:func:`record` adds an entry inside the caller's transaction, so the entry and
the change it records commit together or not at all. Appends are serialised by
updating the one row of ``audit_head`` first (a row lock on PostgreSQL, the
database's write lock on SQLite), so the second of two writers waits and then
chains onto the first. Should that ever fail, ``seq`` (primary key) and
``prev_hash`` (unique) still refuse a fork.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import CursorResult, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cleanroom.manager.database import AuditEntry, AuditHead
from cleanroom.protocol.encoding import canonical

GENESIS = "0" * 64
OPERATOR = "operator"
"""The actor of `cleanroom admin` commands (whoever runs them on the manager's machine)."""
TOKEN_HOLDER = "token-holder"  # noqa: S105 - an audit actor, not a secret
"""The actor of a token revoked by presenting it alone (RFC 7009): whoever held it, which
may be a Controller it was shown to; never the token's owner, who is in the details."""


def entry_hash(
    prev_hash: str, seq: int, when: int, actor: str, action: str, target: str, details: str
) -> str:
    body = canonical(
        {
            "seq": seq,
            "time": when,
            "actor": actor,
            "action": action,
            "target": target,
            "details": details,
        }
    )
    return hashlib.sha256(prev_hash.encode("ascii") + body).hexdigest()


def record(session: Session, actor: str, action: str, target: str, **details: Any) -> AuditEntry:
    """Append an entry in ``session``'s transaction (the caller commits).

    ``details`` must be JSON values; never put a secret in them.
    """
    _lock_head(session)
    state = session.get_one(AuditHead, 1, populate_existing=True)
    seq, prev = state.seq + 1, state.hash
    when = int(time.time())
    body = canonical(details).decode("utf-8")
    entry = AuditEntry(
        seq=seq,
        time=when,
        actor=actor,
        action=action,
        target=target,
        details=body,
        prev_hash=prev,
        hash=entry_hash(prev, seq, when, actor, action, target, body),
    )
    session.add(entry)
    state.seq, state.hash = seq, entry.hash
    session.flush()
    return entry


def _lock_head(session: Session) -> None:
    """Take the append lock: a no-op update of the head row (created on first use)."""
    touch = update(AuditHead).where(AuditHead.id == 1).values(seq=AuditHead.seq)
    touched: CursorResult[Any] = session.execute(touch)  # type: ignore[assignment]
    if touched.rowcount == 1:
        return
    try:
        with session.begin_nested():
            session.execute(insert(AuditHead).values(id=1, seq=0, hash=GENESIS))
    except IntegrityError:
        pass  # another writer created it first
    session.execute(touch)


def entries(session: Session, after: int = 0) -> Iterator[AuditEntry]:
    """Every entry with ``seq > after``, oldest first, read in pages."""
    while True:
        page = list(
            session.scalars(
                select(AuditEntry)
                .where(AuditEntry.seq > after)
                .order_by(AuditEntry.seq)
                .limit(1000)
            )
        )
        if not page:
            return
        yield from page
        after = page[-1].seq


def newest(session: Session) -> AuditEntry | None:
    """The newest entry: its hash commits to the whole log (copy it elsewhere to anchor)."""
    return session.scalars(select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(1)).first()


@dataclass(frozen=True)
class Verdict:
    """The result of :func:`verify`: how many entries held, and the first that did not."""

    checked: int
    head: str
    broken_at: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.broken_at is None


def verify(session: Session) -> Verdict:
    """Recompute the chain from the first entry; stop at the first that does not match."""
    prev, expected_seq, checked = GENESIS, 1, 0
    for entry in entries(session):
        if entry.seq != expected_seq:
            return Verdict(
                checked,
                prev,
                expected_seq,
                f"audit-sequence: expected entry {expected_seq}, got entry {entry.seq} "
                "(entries are missing)",
            )
        if entry.prev_hash != prev:
            return Verdict(
                checked,
                prev,
                entry.seq,
                f"audit-chain: entry {entry.seq} names previous hash {entry.prev_hash}, "
                f"expected {prev}",
            )
        actual = entry_hash(
            entry.prev_hash,
            entry.seq,
            entry.time,
            entry.actor,
            entry.action,
            entry.target,
            entry.details,
        )
        if actual != entry.hash:
            return Verdict(
                checked,
                prev,
                entry.seq,
                f"audit-hash: entry {entry.seq} hashes to {actual}, its stored hash is "
                f"{entry.hash} (the entry was changed)",
            )
        prev, expected_seq, checked = entry.hash, expected_seq + 1, checked + 1
    state = session.get(AuditHead, 1)
    recorded = (0, GENESIS) if state is None else (state.seq, state.hash)
    if recorded != (checked, prev):
        return Verdict(
            checked,
            prev,
            checked + 1,
            f"audit-head: the head records entry {recorded[0]} with hash {recorded[1]}, "
            f"the log ends at entry {checked} with hash {prev} (entries were removed "
            "from the end, or the head was changed)",
        )
    return Verdict(checked, prev)
