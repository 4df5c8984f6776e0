"""The user's own names for other users' IDs: a local, unsigned name book in the profile.

A right in a clean room is granted to a user ID, 43 characters of base64url (the
SHA-256 of a public key). Nobody compares 43 characters by eye for every right, and a
deployer can grind a key whose ID starts and ends like a trusted party's, so a review
shows each ID by the name the user gave it here, and every other ID plainly as
unknown (as ssh's known_hosts, Signal's safety numbers and GPG's petnames do).

The book is ``contacts.json`` (0600) in the profile directory: name -> user ID, one
name per ID and one ID per name, written atomically. It is the user's own word,
checked with the other party out of band (``cleanroom whoami`` prints the ID to
give); nothing signs it and nothing outside this profile reads it.

A name is printable ASCII (letters, digits, space, ``.``, ``_``, ``-``, ``@``, ``'``),
1 to 40 characters, beginning and ending with a letter or digit: no control,
bidirectional or look-alike character reaches the review, and no name is as long as
a user ID. Two names that read alike (:func:`cleanroom.protocol.text.folded`, then
the look-alike ASCII of Unicode's confusables: ``0``/``o``, ``1``/``l``/``i``,
``rn``/``m``, ``vv``/``w``) are one name.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from cleanroom.client.profile import write_atomic
from cleanroom.errors import EXIT_USAGE, CheckFailed
from cleanroom.protocol.encoding import from_b64u
from cleanroom.protocol.errors import MessageFormatError
from cleanroom.protocol.text import folded, shown

CONTACTS_FILE = "contacts.json"
CONTACTS_TYPE: Literal["cleanroom/contacts/v1"] = "cleanroom/contacts/v1"
MAX_NAME = 40

_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9 ._@'-]{0,38}[A-Za-z0-9])?")
_USER_ID = re.compile(r"[A-Za-z0-9_-]{43}")
_RESERVED = frozenset({"you", "unknown"})  # words the review prints beside IDs
# Look-alikes among the characters a name may hold once case folded (a subset of
# Unicode's confusables.txt, stricter: "I" folds to "i", and reads as "l").
_LOOKALIKE = (("rn", "m"), ("vv", "w"), ("0", "o"), ("1", "l"), ("i", "l"))
_PRIVATE_FILE = 0o600


class ContactError(CheckFailed):
    """A name or user ID refused for the name book, or a name book that cannot be used."""

    exit_code = EXIT_USAGE


def skeleton(name: str) -> str:
    """The form under which two names read alike: folded, then look-alikes replaced."""
    text = folded(name)
    for lookalike, meant in _LOOKALIKE:
        text = text.replace(lookalike, meant)
    return text


LOOKALIKE_ENDS = 6
"""Characters at each end of an ID a glance compares, for :func:`resemblance`."""

LOOKALIKE_MATCHES = 4
"""Characters of those 12 alike in place from which an ID is said to look like another."""


def _glyph(char: str) -> str:
    return skeleton(char)  # one character each: case aside, 0 as o, 1 and i as l


def resemblance(user_id: str, other: str) -> int:
    """How many of the first and last :data:`LOOKALIKE_ENDS` characters of two user IDs
    read alike, each in its place (case aside; ``0``/``O``/``o`` and ``1``/``l``/``I``/
    ``i`` one glyph): what a deployer grinds keys for, to make an ID pass at a glance
    for another. Two random IDs have 4 or more of 12 about once in 1,300 pairs; a key
    whose ID reads like another's at 4 places takes some 2^20 tries, so the measure
    is a hint of what a grind made, never a defence: that is the name book."""
    ends = LOOKALIKE_ENDS
    first = user_id[:ends] + user_id[-ends:]
    second = other[:ends] + other[-ends:]
    return sum(_glyph(a) == _glyph(b) for a, b in zip(first, second, strict=False))


def check_name(name: str) -> str:
    """``name`` if it may name a contact; else :class:`ContactError` (check ``contact-name``)."""
    if not _NAME.fullmatch(name) or "  " in name:
        raise ContactError(
            "contact-name",
            f"1 to {MAX_NAME} of A-Z a-z 0-9 space . _ - @ ', beginning and ending with a "
            "letter or digit, no two spaces together",
            shown(name),
            f"{shown(name)} cannot name a contact: use 1 to {MAX_NAME} of A-Z a-z 0-9 space "
            ". _ - @ ', beginning and ending with a letter or digit",
        )
    if skeleton(name) in _RESERVED:
        raise ContactError(
            "contact-name",
            f"a name other than {', '.join(sorted(_RESERVED))}",
            shown(name),
            f"{shown(name)} is a word the review prints beside user IDs: choose another name",
        )
    return name


def check_user_id(text: str) -> str:
    """The user ID in ``text`` (as ``cleanroom whoami`` prints it: surrounding blanks
    are dropped), else :class:`ContactError` (check ``contact-user-id``)."""
    user_id = text.strip()
    if not _USER_ID.fullmatch(user_id):
        raise ContactError(
            "contact-user-id",
            "a user ID: 43 characters of base64url, as cleanroom whoami prints it",
            shown(user_id[:80]),
            f"{shown(user_id[:80])} is not a user ID: give 43 characters of base64url, as "
            "cleanroom whoami prints it",
        )
    try:
        from_b64u(user_id, "user_id", size=32)
    except MessageFormatError:
        # Stray low bits: another spelling of one key, which no spec can name.
        raise ContactError(
            "contact-user-id",
            "a canonical user ID",
            user_id,
            f"{user_id} is not a canonical user ID (its last character's low bits are set): "
            "copy it again from cleanroom whoami",
        ) from None
    return user_id


@dataclass(frozen=True)
class Contacts:
    """A snapshot of the name book: name -> user ID, one to one."""

    by_name: Mapping[str, str]

    @classmethod
    def of(cls, entries: Mapping[str, str]) -> Contacts:
        """The book of ``entries``, each name and ID checked, no two alike."""
        names: dict[str, str] = {}
        ids: dict[str, str] = {}
        for name, user_id in sorted(entries.items()):
            check_name(name)
            if check_user_id(user_id) != user_id:
                raise ContactError(
                    "contact-user-id",
                    "a user ID alone",
                    shown(user_id),
                    f"{name}'s user ID has blanks around it",
                )
            if skeleton(name) in names:
                _taken_name(name, names[skeleton(name)])
            if user_id in ids:
                _taken_id(user_id, ids[user_id])
            names[skeleton(name)], ids[user_id] = name, name
        return cls(MappingProxyType(dict(sorted(entries.items()))))

    def name_of(self, user_id: str) -> str | None:
        """The name the user gave ``user_id`` (the whole ID, exactly), else None."""
        for name, known in self.by_name.items():
            if known == user_id:
                return name
        return None

    def resembled(self, user_id: str, you: str | None = None) -> str | None:
        """The contact whose ID ``user_id`` looks like without being it (:func:`resemblance`:
        what a key ground to pass at a glance is), the closest; ``"you"`` (a name no
        contact may have) when it is ``you``, the reviewer's own ID; else None."""
        candidates = [(name, known) for name, known in self.by_name.items() if known != user_id]
        if you is not None and you != user_id:
            candidates.insert(0, ("you", you))
        alike = [(resemblance(user_id, known), name) for name, known in candidates]
        alike = [(score, name) for score, name in alike if score >= LOOKALIKE_MATCHES]
        return max(alike, key=lambda pair: pair[0])[1] if alike else None

    def label(self, user_id: str, you: str | None = None) -> str:
        """``user_id`` for a review: ``NAME (ID)`` when named, the ID alone when it is
        the reviewer's own (marked "(you)" where it is shown), else ``unknown: ID``."""
        name = self.name_of(user_id)
        if name is not None:
            return f"{name} ({user_id})"
        if user_id == you:
            return user_id
        like = self.resembled(user_id, you)
        if like == "you":
            return f"unknown: {user_id} (NOT your ID, which looks alike)"
        if like is not None:
            return f"unknown: {user_id} (NOT {like}'s ID, which looks alike)"
        return f"unknown: {user_id}"

    def who(self, user_id: str, you: str | None = None) -> str:
        """:meth:`label`, with "(you)" after the reviewer's own ID."""
        return self.label(user_id, you) + (" (you)" if user_id == you else "")

    def unknown(self, user_ids: Iterable[str], you: str | None = None) -> list[str]:
        """Those of ``user_ids`` neither named here nor the reviewer's own."""
        return [u for u in user_ids if u != you and self.name_of(u) is None]

    def added(self, name: str, user_id: str, *, replace: bool = False) -> Contacts:
        """The book with ``name`` for ``user_id``; a name or ID already bound otherwise
        is refused (``contact-taken``) unless ``replace``, which drops that binding."""
        check_name(name)
        user_id = check_user_id(user_id)
        entries = dict(self.by_name)
        for other, known in self.by_name.items():
            same_name = skeleton(other) == skeleton(name)
            if (same_name and known != user_id) or (known == user_id and other != name):
                if not replace:
                    if same_name:
                        _taken_name(name, other, known)
                    _taken_id(user_id, other)
                del entries[other]
            elif same_name:
                del entries[other]  # the same binding, perhaps spelt otherwise: renamed
        entries[name] = user_id
        return Contacts.of(entries)

    def removed(self, name: str) -> Contacts:
        """The book without ``name`` (which must be in it, spelt exactly)."""
        if name not in self.by_name:
            raise ContactError(
                "contact-name",
                "a name in the book",
                shown(name),
                f"no contact is named {shown(name)} (cleanroom contacts list shows them)",
            )
        return Contacts.of({k: v for k, v in self.by_name.items() if k != name})

    def document(self) -> dict[str, object]:
        """The file's JSON document."""
        return {"type": CONTACTS_TYPE, "contacts": dict(self.by_name)}


def _taken_name(name: str, other: str, known: str | None = None) -> None:
    held = f" for {known}" if known else ""
    raise ContactError(
        "contact-taken",
        f"a name unlike every other in the book, or --replace to rebind {other}",
        shown(name),
        f"{shown(name)} reads as {shown(other)}, already in the book{held}: choose "
        f"another name, or --replace to rebind {shown(other)}",
    )


def _taken_id(user_id: str, other: str) -> None:
    raise ContactError(
        "contact-taken",
        "one name per user ID, or --replace to rename it",
        user_id,
        f"user ID {user_id} is already named {shown(other)}: --replace renames it",
    )


def _refused(path: Path, message: str) -> ContactError:
    return ContactError(
        "contacts-file", f"a name book as {CONTACTS_TYPE}", str(path), f"{path}: {message}"
    )


def load(directory: Path) -> Contacts:
    """The name book of the profile in ``directory`` (empty if there is none).

    Refused when others may read or write it, as ssh refuses a known_hosts others
    could change, and when any entry is malformed: the book is never half read."""
    path = directory / CONTACTS_FILE
    try:
        with open(path, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise _refused(
                    path, f"accessible by others (mode {stat.S_IMODE(mode):04o}): chmod 600 {path}"
                )
            data = handle.read()
    except FileNotFoundError:
        return Contacts(MappingProxyType({}))
    except OSError as error:
        raise _refused(path, f"cannot be read: {error.strerror}") from error
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise _refused(path, f"not JSON: {error}") from error
    if (
        not isinstance(document, dict)
        or set(document) != {"type", "contacts"}
        or document["type"] != CONTACTS_TYPE
        or not isinstance(document["contacts"], dict)
        or not all(isinstance(value, str) for value in document["contacts"].values())
    ):
        raise _refused(path, f'not {{"type": "{CONTACTS_TYPE}", "contacts": {{NAME: USER_ID}}}}')
    return Contacts.of(document["contacts"])


def save(directory: Path, contacts: Contacts) -> None:
    """Write the name book atomically, 0600."""
    data = (json.dumps(contacts.document(), indent=2, sort_keys=True) + "\n").encode()
    write_atomic(directory / CONTACTS_FILE, data, _PRIVATE_FILE)


__all__ = [
    "CONTACTS_FILE",
    "LOOKALIKE_ENDS",
    "LOOKALIKE_MATCHES",
    "ContactError",
    "Contacts",
    "check_name",
    "check_user_id",
    "load",
    "resemblance",
    "save",
    "skeleton",
]
