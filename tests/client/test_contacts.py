"""The name book (cleanroom.client.contacts) and ``cleanroom contacts``: no server needed."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from cleanroom.client import contacts as book
from cleanroom.client.contacts import CONTACTS_FILE, ContactError, Contacts
from cleanroom.client.profile import Profile
from tests.client.conftest import new_user_id
from tests.client.test_cli_user import configure, run

EMPTY = Contacts.of({})


def lookalike(user_id: str) -> str:
    """Another canonical user ID with the same first 6 and last 6 characters (what a
    deployer grinds keys for; the last character, which holds the padding bits, kept)."""
    middle = user_id[6:-6][::-1]
    if middle == user_id[6:-6]:
        middle = "".join("B" if char == "A" else "A" for char in middle)
    return user_id[:6] + middle + user_id[-6:]


# --- the store -----------------------------------------------------------------------


def test_names_and_ids_are_bound_one_to_one(alice: str, bob: str) -> None:
    contacts = EMPTY.added("Alice", alice).added("bob @ globex", bob)
    assert contacts.name_of(alice) == "Alice"
    assert contacts.name_of(bob) == "bob @ globex"
    assert contacts.name_of(lookalike(alice)) is None

    with pytest.raises(ContactError) as refused:
        contacts.added("Carol", alice)  # a second name for one ID
    assert refused.value.check == "contact-taken"
    assert "already named Alice" in str(refused.value)
    with pytest.raises(ContactError) as refused:
        contacts.added("alice", new_user_id())  # a name that reads as one in the book
    assert refused.value.check == "contact-taken"
    for alike in ("ALICE", "A1ice", "AIice", "alIce", "A1ICE"):  # 1 and I read as l
        with pytest.raises(ContactError, match="reads as Alice"):
            contacts.added(alike, new_user_id())
    with pytest.raises(ContactError, match="reads as"):
        EMPTY.added("morgan", alice).added("rnorgan", bob)

    assert contacts.added("Alice", alice) == contacts  # the same binding again: nothing new
    carol = new_user_id()
    moved = contacts.added("Alice", carol, replace=True)
    assert moved.by_name == {"Alice": carol, "bob @ globex": bob}
    renamed = contacts.added("Al", alice, replace=True)
    assert renamed.by_name == {"Al": alice, "bob @ globex": bob}
    assert contacts.removed("Alice").by_name == {"bob @ globex": bob}
    with pytest.raises(ContactError, match="no contact is named alice"):
        contacts.removed("alice")  # removed only as spelt


@pytest.mark.parametrize(
    "name",
    [
        "",
        " alice",
        "alice ",
        "al  ice",
        "alice\u202e",  # a bidirectional override
        "al\u200bice",  # a zero-width space
        "\u0430lice",  # Cyrillic a
        "alice\n",
        "alice\x1b[31m",
        "-alice",
        "a" * 41,
        "you",
        "Unknown",
        "alice:bob",
    ],
)
def test_a_name_that_cannot_be_read_plainly_is_refused(name: str, alice: str) -> None:
    with pytest.raises(ContactError) as refused:
        EMPTY.added(name, alice)
    assert refused.value.check == "contact-name"
    assert str(refused.value).isascii()


def test_only_a_well_formed_user_id_is_taken(alice: str) -> None:
    assert EMPTY.added("alice", f"  {alice}\n").by_name == {"alice": alice}  # as whoami prints
    stray = alice[:-1] + "B"  # its low 2 bits are set: padding, another spelling
    for bad in (alice[:-1], alice + "A", alice.replace(alice[5], "+"), stray, "user_id: x"):
        with pytest.raises(ContactError) as refused:
            EMPTY.added("alice", bad)
        assert refused.value.check == "contact-user-id", bad


def test_a_look_alike_id_is_unknown_and_said_to_look_alike(alice: str, bob: str) -> None:
    contacts = EMPTY.added("alice", alice)
    forged = lookalike(alice)
    assert forged != alice and forged[:6] == alice[:6] and forged[-6:] == alice[-6:]
    assert contacts.label(alice) == f"alice ({alice})"
    assert contacts.label(forged) == f"unknown: {forged} (NOT alice's ID, which looks alike)"
    assert contacts.label(bob, you=bob) == bob
    assert contacts.who(bob, you=bob) == f"{bob} (you)"
    assert contacts.unknown([alice, forged, bob, forged], you=bob) == [forged, forged]


CAROL = "sQ7kXl" + "m" * 31 + "a0IoLE"  # a canonical ID with look-alike glyphs at its ends
ENDS = [*range(6), *range(37, 43)]
_ALIKE = {"s": "S", "Q": "q", "7": "7", "k": "K", "X": "x", "l": "1", "a": "A", "0": "O",
          "I": "l", "o": "0", "L": "I", "E": "e"}  # fmt: skip


def forge(target: str, ends: str) -> str:
    """An ID like ``target`` at each of its first and last six places as ``ends`` (12
    characters) says: ``=`` the same character, ``~`` one that reads alike (case, 0/O,
    1/l/I) where there is one, ``.`` one that reads otherwise; its middle its own."""
    chars = ["-"] * 43
    for place, how in zip(ENDS, ends, strict=True):
        char = target[place]
        chars[place] = {"=": char, "~": _ALIKE.get(char, char), ".": "Z" if char != "z" else "Y"}[
            how
        ]
    return "".join(chars)


@pytest.mark.parametrize(
    ("ends", "like"),
    [
        # First and last three the same: 2^36 tries, what 4 + 4 missed.
        ("===......===", True),
        # Every end reads alike, none the same (case, 0/O, 1/l/I): 4 + 4 missed it.
        ("~~~~~~~~~~~~", True),
        # All but the first character: 4 + 4 missed it.
        (".=====......", True),
        ("=.=.=.=.....", True),  # four places anywhere at the ends
        ("~..~....~..~", True),
        ("===.........", False),  # three: about once in 30,000 pairs of random IDs
        ("...........~", False),
        ("............", False),  # the middle is not compared: nobody reads it at a glance
    ],
)
def test_an_id_is_said_to_look_like_a_contacts_when_four_of_its_ends_read_alike(
    ends: str, like: bool
) -> None:
    """The hint was: the same first four or last four characters, exactly. An ID ground
    to match three and three (2^36 tries, seconds on a GPU), or to read alike by case
    and 0/O, 1/l/I (5 bits a character, not 6), passed without it (left open by h11)."""
    contacts = EMPTY.added("carol", CAROL)
    forged = forge(CAROL, ends)
    assert forged != CAROL and len(forged) == 43
    hint = f"unknown: {forged} (NOT carol's ID, which looks alike)"
    assert contacts.label(forged) == (hint if like else f"unknown: {forged}")
    assert book.resemblance(forged, CAROL) == (ends.count("=") + ends.count("~"))


def test_an_id_that_looks_like_the_reviewers_own_is_said_to_be_not_theirs(bob: str) -> None:
    """The review marks the reviewer's own ID "(you)" only when it is exactly that one: a
    right granted to a look-alike of it read as the reviewer's at a glance."""
    forged = forge(CAROL, "======......")
    assert EMPTY.label(forged, you=CAROL) == f"unknown: {forged} (NOT your ID, which looks alike)"
    assert EMPTY.who(forged, you=CAROL) == f"unknown: {forged} (NOT your ID, which looks alike)"
    assert EMPTY.label(forged, you=bob) == f"unknown: {forged}"


def test_the_closest_look_alike_is_named() -> None:
    dave = forge(CAROL, "=====......=")  # a contact whose ID is itself like Carol's
    contacts = EMPTY.added("dave", dave).added("carol", CAROL)
    forged = forge(CAROL, "~~~~~~~~~~~~")
    assert (book.resemblance(forged, CAROL), book.resemblance(forged, dave)) == (12, 6)
    assert contacts.resembled(forged) == "carol"


def test_the_book_is_written_0600_atomically(tmp_path: Path, alice: str, bob: str) -> None:
    book.save(tmp_path, EMPTY.added("alice", alice))
    path = tmp_path / CONTACTS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    inode = path.stat().st_ino
    book.save(tmp_path, book.load(tmp_path).added("bob", bob))
    assert path.stat().st_ino != inode  # a new file renamed over the old: never half written
    assert [p.name for p in tmp_path.iterdir()] == [CONTACTS_FILE]  # no temporary left
    assert book.load(tmp_path).by_name == {"alice": alice, "bob": bob}
    assert json.loads(path.read_text())["type"] == "cleanroom/contacts/v1"


def test_a_book_others_could_change_or_malformed_is_refused(tmp_path: Path, alice: str) -> None:
    assert book.load(tmp_path).by_name == {}  # none yet
    book.save(tmp_path, EMPTY.added("alice", alice))
    path = tmp_path / CONTACTS_FILE
    os.chmod(path, 0o620)
    with pytest.raises(ContactError, match="accessible by others") as refused:
        book.load(tmp_path)
    assert refused.value.check == "contacts-file"
    for contents in (
        {"type": "cleanroom/contacts/v1", "contacts": {"alice": alice, "Alice": new_user_id()}},
        {"type": "cleanroom/contacts/v1", "contacts": {"alice": alice, "bob": alice}},
        {"type": "cleanroom/contacts/v1", "contacts": {"al\u202eice": alice}},
        {"type": "cleanroom/contacts/v1", "contacts": {"alice": alice[:-1]}},
        {"type": "cleanroom/contacts/v2", "contacts": {}},
        {"contacts": {"alice": alice}},
        [],
    ):
        path.write_text(json.dumps(contents))
        os.chmod(path, 0o600)
        with pytest.raises(ContactError):
            book.load(tmp_path)


# --- the commands --------------------------------------------------------------------


def test_contacts_commands(home: Path, capsys: pytest.CaptureFixture[str], alice: str) -> None:
    assert run(capsys, *configure(profile="bob"))[0] == 0
    bob = Profile.load("bob")
    code, out, err = run(capsys, "--profile", "bob", "contacts", "list")
    assert (code, out) == (0, "")
    assert "no contacts: cleanroom --profile bob contacts add NAME -- USER_ID" in err

    code, out, err = run(capsys, "--profile", "bob", "contacts", "add", "alice", "--", f"{alice}\n")
    assert code == 0, err
    assert out == f"alice ({alice})\n"
    path = bob.directory / CONTACTS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    code, out, err = run(capsys, "--profile", "bob", "contacts", "add", "Carol", "--", alice)
    assert code == 2
    assert err == f"error: user ID {alice} is already named alice: --replace renames it\n"
    code, out, err = run(capsys, "--profile", "bob", "contacts", "add", "al\u202eice", "--", alice)
    assert code == 2
    assert err.startswith("error: al\\u202eice cannot name a contact: use 1 to 40 of")
    assert "\u202e" not in err
    code, _, err = run(capsys, "--profile", "bob", "contacts", "add", "carol", "--", alice[:40])
    assert code == 2
    assert err.startswith(f"error: {alice[:40]} is not a user ID: give 43 characters")

    code, out, err = run(
        capsys, "--profile", "bob", "contacts", "add", "--replace", "carol", "--", alice
    )
    assert code == 0, err
    assert f"replaced: alice ({alice})" in err
    code, out, _ = run(capsys, "--profile", "bob", "contacts", "list")
    assert out == f"{alice}  carol\n"
    code, out, _ = run(capsys, "--profile", "bob", "-o", "json", "contacts", "list")
    assert json.loads(out) == {
        "you": bob.user_id,
        "contacts": [{"name": "carol", "user_id": alice}],
    }
    assert run(capsys, "--profile", "bob", "contacts", "list", "--json")[1] == out

    dashed = "-" + alice[1:]  # an ID may begin with "-": after "--", it is no option
    code, out, err = run(capsys, "--profile", "bob", "contacts", "add", "dash", "--", dashed)
    assert (code, out) == (0, f"dash ({dashed})\n"), err
    assert run(capsys, "--profile", "bob", "contacts", "remove", "dash")[0] == 0
    code, out, _ = run(capsys, "--profile", "bob", "contacts", "remove", "carol")
    assert (code, out) == (0, f"removed: carol ({alice})\n")
    code, _, err = run(capsys, "--profile", "bob", "contacts", "remove", "carol")
    assert code == 2
    assert err == "error: no contact is named carol (cleanroom contacts list shows them)\n"
    assert book.load(bob.directory).by_name == {}


def test_contacts_add_takes_what_whoami_prints(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, *configure(profile="alice"))[0] == 0
    assert run(capsys, *configure(profile="bob"))[0] == 0
    _, printed, _ = run(capsys, "--profile", "alice", "whoami")
    code, _, err = run(capsys, "--profile", "bob", "contacts", "add", "alice", "--", printed)
    assert code == 0, err
    assert (
        book.load(Profile.load("bob").directory).name_of(Profile.load("alice").user_id) == "alice"
    )
