"""The rows a query releases come in an order that depends on nothing but the rows
released: a list query's rows came in the order of the runner's own upload (DuckDB
probes its hash join with the larger input, and keeps that input's order), so the
runner matched each listed segment to her own customer, one by one, past the join
column the list rule keeps hidden (red team h23); a custom rule's approved query kept
that order too (h29). Through a real room, the real sandbox and engine."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from cleanroom.enclave.runner import Sandbox
from cleanroom.errors import CheckFailed
from cleanroom.protocol.spec import WorkSpec
from cleanroom.sql.rules import check_spec_queries, plan_query
from tests.enclave.test_sqlroom import make_room, query, upload
from tests.protocol.fixtures import ALICE, BOB
from tests.sandbox import confined
from tests.sql.fixtures import bob_csv, sql_document

LISTED = "SELECT b.segment FROM input_2 b JOIN input_1 a ON a.email = b.email"
# Bob's customers (bob_csv), all of them Alice's too (she has c0..c1999).
MATCHED = [*range(30), 35, 36, 37, 38, 39, *range(100, 105)]


@pytest.fixture(scope="module")
def confinement() -> Iterator[Sandbox]:
    with confined() as sandbox:
        yield sandbox


def listing_spec() -> WorkSpec:
    """Both inputs under a list rule: Alice's regions, Bob's segments, for the overlap."""
    document = sql_document(queries={})
    document["sql"]["rules"]["input_1"] = {
        "kind": "list", "join_columns": ["email"], "list_columns": ["region"],
    }  # fmt: skip
    return WorkSpec.parse(document)


def alice_in_order(order: list[int]) -> bytes:
    """Alice's 2,000 customers (more than Bob's 40: DuckDB probes with hers), in her order."""
    lines = ["email,region,zip,spend"]
    lines += [f"c{n}@x,{'east' if n < 30 else 'north'},{10000 + n},1.5" for n in order]
    return ("\n".join(lines) + "\n").encode()


def test_a_listed_rows_order_says_nothing_of_the_runners_own_upload(
    tmp_path: Path, confinement: Sandbox
) -> None:
    """Alice uploads her customers in an order she chose, then lists Bob's segments of
    the overlap: before, the rows came in her order, each one the segment of the
    customer she had put there (bob_csv: even numbers business, odd retail). Two
    orders of the same upload now release the same rows, sorted."""
    shuffled = list(range(2000))
    random.Random(7).shuffle(shuffled)  # noqa: S311 - an order to test, not a secret
    released = []
    for name, order in (("ascending", list(range(2000))), ("shuffled", shuffled)):
        room = make_room(tmp_path / name, confinement, listing_spec())
        upload(room, ALICE, "input_1", alice_in_order(order))
        upload(room, BOB, "input_2", bob_csv())
        receipt, _detail, rows = query(room, ALICE, sql=LISTED)
        assert receipt["status"] == "succeeded", rows
        released.append(rows)
    assert released[0] == released[1]
    # Sorted, and each once (a listing is a set: the next test).
    assert released[0] == [["segment"], ["business"], ["retail"]]


def test_a_listing_says_nothing_of_how_often_the_runners_keys_repeat(
    tmp_path: Path, confinement: Sandbox
) -> None:
    """A listing released one row per joined row: Alice uploads customer i's email 2^i
    times (c0 once, c1 twice, c2 four times, c3 eight times) and lists Bob's segments of
    the overlap; how many times each segment came out named, in binary, which of her
    customers have it (business 5 = c0 + c2, retail 10 = c1 + c3: h29's red team, 16
    people from one listing). A listing is a set: each row once."""
    lines = ["email,region,zip,spend"]
    lines += [f"c{n}@x,north,{10000 + n},1.5" for n in range(4) for _ in range(2**n)]
    room = make_room(tmp_path, confinement, listing_spec())
    upload(room, ALICE, "input_1", ("\n".join(lines) + "\n").encode())
    upload(room, BOB, "input_2", bob_csv())
    receipt, _detail, rows = query(room, ALICE, sql=LISTED)
    assert receipt["status"] == "succeeded", rows
    assert rows == [["segment"], ["business"], ["retail"]]
    receipt, _detail, rows = query(room, ALICE, sql=LISTED + " ORDER BY b.segment DESC LIMIT 1")
    assert receipt["status"] == "succeeded", rows
    assert rows == [["segment"], ["retail"]]


@pytest.mark.parametrize(
    "text",
    [
        "SELECT b.segment FROM input_2 b JOIN input_1 a ON a.email = b.email ORDER BY a.region",
        "SELECT b.segment AS s FROM input_2 b JOIN input_1 a ON a.email = b.email"
        " ORDER BY upper(b.segment)",
    ],
)
def test_a_listing_orders_only_by_what_it_lists(text: str) -> None:
    """A listing's rows are distinct, so it is ordered by its own columns only (DuckDB
    refuses another ORDER BY of a SELECT DISTINCT): refused by name when checked."""
    with pytest.raises(CheckFailed) as caught:
        plan_query(listing_spec(), name=None, text=text)
    assert caught.value.check.endswith(".shape"), caught.value
    assert "not listed" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "ordered"),
    [
        (LISTED, "ORDER BY 1"),
        (LISTED + " ORDER BY b.segment DESC", "ORDER BY 1 DESC, 1"),
        (LISTED.replace("b.segment", "b.segment AS s") + " ORDER BY s DESC", "ORDER BY 1 DESC, 1"),
        (LISTED.replace("b.segment", "b.segment, a.region") + " ORDER BY 2", "ORDER BY 2, 1, 2"),
    ],
)
def test_a_listing_is_run_as_a_set_ordered_by_its_columns(text: str, ordered: str) -> None:
    plan = plan_query(listing_spec(), name=None, text=text)
    assert plan.sql.startswith("SELECT DISTINCT "), plan.sql
    assert plan.sql.replace(" NULLS LAST", "").replace(" ASC", "").endswith(ordered), plan.sql


def custom_spec(text: str = LISTED) -> WorkSpec:
    """Both inputs under a custom rule that allows one named query, ``segments``: Bob
    approved a listing of his segments for the overlap, as its text says."""
    document = sql_document(queries={"segments": {"text": text, "output": "output_1"}}, adhoc=None)
    for input_id in ("input_1", "input_2"):
        document["sql"]["rules"][input_id] = {"kind": "custom", "allowed_queries": ["segments"]}
    return WorkSpec.parse(document)


def test_a_custom_querys_rows_say_nothing_of_the_runners_own_upload(
    tmp_path: Path, confinement: Sandbox
) -> None:
    """The same linkage through a query the owners approved under a custom rule: its
    rows came in DuckDB's order, which followed Alice's upload, each segment beside the
    place she had put its customer (h23 left it to the owner; h29). Now sorted by every
    column after the query's own ORDER BY: two orders of her upload release the same
    rows, sorted."""
    shuffled = list(range(2000))
    random.Random(11).shuffle(shuffled)  # noqa: S311 - an order to test, not a secret
    released = []
    for name, order in (("ascending", list(range(2000))), ("shuffled", shuffled)):
        room = make_room(tmp_path / name, confinement, custom_spec())
        upload(room, ALICE, "input_1", alice_in_order(order))
        upload(room, BOB, "input_2", bob_csv())
        receipt, _detail, rows = query(room, ALICE, name="segments")
        assert receipt["status"] == "succeeded", rows
        released.append(rows)
    assert released[0] == released[1]
    assert released[0][1:] == sorted(released[0][1:])
    assert len(released[0]) == 1 + len(MATCHED)


@pytest.mark.parametrize(
    ("text", "ordered"),
    [
        # No ORDER BY: every column, in turn (DuckDB's ORDER BY ALL), before the LIMIT.
        (LISTED, "ORDER BY ALL"),
        (LISTED + " LIMIT 3", "ORDER BY ALL LIMIT 3"),
        ("SELECT segment FROM input_2 UNION SELECT region FROM input_1", "ORDER BY ALL"),
        ("WITH s AS (SELECT * FROM input_2) SELECT * FROM s", "ORDER BY ALL"),
        # Its own ORDER BY first, its ties broken by each of its columns.
        (
            "SELECT b.segment, COUNT(*) AS n FROM input_2 b GROUP BY b.segment ORDER BY n DESC",
            "ORDER BY n DESC, 1, 2",
        ),
        ("SELECT segment FROM input_2 ORDER BY 1 DESC", "ORDER BY 1 DESC, 1"),
        # Total already.
        ("SELECT segment FROM input_2 ORDER BY ALL DESC", "ORDER BY ALL DESC"),
    ],
)
def test_a_custom_query_is_run_ordered_by_every_column(text: str, ordered: str) -> None:
    plan = plan_query(custom_spec(text), name="segments")
    assert plan.sql.replace(" NULLS LAST", "").replace(" ASC", "").endswith(ordered), plan.sql


def test_a_custom_query_that_orders_a_star_is_refused() -> None:
    """Its columns cannot be counted from its text, so its ties cannot be broken by each
    of them: an owner names the columns of a query that has an ORDER BY."""
    for text in (
        "SELECT * FROM input_2 ORDER BY segment",
        "SELECT b.* FROM input_2 b ORDER BY 1",
        "SELECT * EXCLUDE (email) FROM input_2 ORDER BY segment",
    ):
        spec = custom_spec(text)
        with pytest.raises(CheckFailed) as caught:
            plan_query(spec, name="segments")
        assert caught.value.check == "custom.order", text
        with pytest.raises(CheckFailed) as at_deploy:
            check_spec_queries(spec)
        assert at_deploy.value.check == "custom.order", text


COUNTED = "SELECT b.segment, COUNT(*) AS n FROM input_2 b JOIN input_1 a ON a.email = b.email"


def test_a_listing_counts_nothing_of_its_joined_rows(tmp_path: Path, confinement: Sandbox) -> None:
    """A listing is a set, but ``COUNT(*)`` counts no column, so no list rule refused it:
    under list rules alone ``SELECT b.segment, COUNT(*) … GROUP BY b.segment`` released,
    under no threshold, how many joined rows gave each segment, which is the 2^i listing
    that ``SELECT DISTINCT`` closed (Alice uploads customer i's email 2^i times: business
    5 = c0 + c2, retail 10 = c1 + c3, so which of her customers have which segment: red
    team h36). A list query aggregates nothing: refused by name, before anything runs."""
    lines = ["email,region,zip,spend"]
    lines += [f"c{n}@x,north,{10000 + n},1.5" for n in range(4) for _ in range(2**n)]
    room = make_room(tmp_path, confinement, listing_spec())
    upload(room, ALICE, "input_1", ("\n".join(lines) + "\n").encode())
    upload(room, BOB, "input_2", bob_csv())
    for text in (
        COUNTED + " GROUP BY b.segment",
        "SELECT COUNT(*) AS n FROM input_2 b JOIN input_1 a ON a.email = b.email"
        " WHERE b.segment = 'retail'",
        "SELECT b.segment FROM input_2 b JOIN input_1 a ON a.email = b.email"
        " GROUP BY b.segment HAVING COUNT(*) > 4",
    ):
        with pytest.raises(CheckFailed) as caught:
            query(room, ALICE, sql=text)
        assert caught.value.check == "list.shape", caught.value
        assert "aggregate" in str(caught.value), caught.value
    assert room.runs == {}, "nothing ran"
    # The listing itself still runs, as a set.
    receipt, _detail, rows = query(room, ALICE, sql=LISTED)
    assert receipt["status"] == "succeeded", rows
    assert rows == [["segment"], ["business"], ["retail"]]


@pytest.mark.parametrize(
    "text",
    [
        COUNTED + " GROUP BY b.segment",
        COUNTED + " GROUP BY b.segment ORDER BY n",
        "SELECT COUNT(*) FROM input_2 b JOIN input_1 a ON a.email = b.email",
        "SELECT b.segment FROM input_2 b JOIN input_1 a ON a.email = b.email"
        " GROUP BY b.segment ORDER BY COUNT(*)",
    ],
)
def test_a_list_query_aggregates_nothing(text: str) -> None:
    with pytest.raises(CheckFailed) as caught:
        plan_query(listing_spec(), name=None, text=text)
    assert caught.value.check == "list.shape", caught.value


NUMBERED = (
    "SELECT n, segment FROM (SELECT ROW_NUMBER() OVER () AS n, b.segment"
    " FROM input_2 b JOIN input_1 a ON a.email = b.email) t"
)


def test_a_custom_query_numbers_no_rows_in_the_engines_order(
    tmp_path: Path, confinement: Sandbox
) -> None:
    """Sorting a custom query's released rows did not reach its own ROW_NUMBER() OVER ():
    the numbers came in DuckDB's order, which follows Alice's upload, so each (n, segment)
    row put a segment beside the place she had given its customer (h29, left open; red
    team h36: Alice's 2,000 customers shuffled, the n-th row's segment was that of her n-th
    matched customer 40 times of 40). A ROW_NUMBER() without an ORDER BY is refused by
    name: the Worker of such a spec does not start, before any data moves."""
    with pytest.raises(CheckFailed) as caught:
        make_room(tmp_path, confinement, custom_spec(NUMBERED))
    assert caught.value.check == "custom.order", caught.value
    assert "ROW_NUMBER() OVER ()" in str(caught.value), caught.value


@pytest.mark.parametrize(
    "text",
    [
        NUMBERED,
        "SELECT segment FROM (SELECT segment FROM input_2 LIMIT 3) t",
        "WITH s AS (SELECT segment FROM input_2 OFFSET 2) SELECT segment FROM s",
        "(SELECT segment FROM input_2 LIMIT 1) UNION (SELECT region FROM input_1 LIMIT 1)",
        "SELECT segment FROM input_2 QUALIFY ROW_NUMBER() OVER (PARTITION BY segment) = 1",
        "SELECT segment, ROW_NUMBER() OVER (ORDER BY 1) AS n FROM input_2",
        "SELECT * FROM (SELECT segment FROM input_2 UNION SELECT region FROM input_1 LIMIT 3) t",
    ],
)
def test_a_custom_querys_own_choices_of_rows_name_an_order(text: str) -> None:
    spec = custom_spec(text)
    with pytest.raises(CheckFailed) as caught:
        check_spec_queries(spec)
    assert caught.value.check == "custom.order", caught.value


@pytest.mark.parametrize(
    "text",
    [
        "SELECT segment, ROW_NUMBER() OVER (ORDER BY segment) AS n FROM input_2",
        "SELECT segment FROM (SELECT segment FROM input_2 ORDER BY segment LIMIT 3) t",
        "SELECT segment, COUNT(*) OVER () AS n FROM input_2",
        "SELECT segment FROM input_2 LIMIT 3",
        "SELECT segment FROM input_2 UNION SELECT region FROM input_1 LIMIT 3",
    ],
)
def test_a_custom_query_that_orders_its_choices_runs(text: str) -> None:
    check_spec_queries(custom_spec(text))
