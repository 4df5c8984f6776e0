"""A SQL clean room end to end, from the command line, against real manager and compute
server processes: the example's queries and rules, schema-checked uploads, queries
refused with the rule named, rows under the threshold suppressed, the budget."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path

from cleanroom.insecure.localstack import LocalStack
from cleanroom.protocol.encoding import canonical
from tests.e2e.test_cli_flow import configured
from tests.e2e.test_runtimes import require_data_runtime

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "sql" / "overlap"
REGIONS = ("east", "north", "south", "west")
SEGMENTS = ("business", "retail")


def hashed(customer: int) -> str:
    return hashlib.sha256(f"customer{customer}@example.com".encode()).hexdigest()


def write_inputs(tmp_path: Path) -> dict[tuple[str, str], int]:
    """Party 1 has customers 0..299, party 2 150..449; the overlap's region x segment
    counts, which cells under 10 the rules must suppress (south has 5 per segment)."""
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    region = {
        n: ("south" if n % 30 == 0 else REGIONS[n % 3 if n % 3 != 2 else 3]) for n in range(450)
    }
    with (one / "customers.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email_sha256", "region"])
        writer.writerows([hashed(n), region[n]] for n in range(300))
    with (two / "customers.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email_sha256", "segment"])
        writer.writerows([hashed(n), SEGMENTS[n % 2]] for n in range(150, 450))
    cells: dict[tuple[str, str], int] = {}
    for n in range(150, 300):
        key = (region[n], SEGMENTS[n % 2])
        cells[key] = cells.get(key, 0) + 1
    return cells


def test_a_sql_room_from_the_command_line(stack: LocalStack, tmp_path: Path) -> None:
    require_data_runtime()
    alice, alice_id = configured(stack, tmp_path, "alice-sql", "acme")
    bob, bob_id = configured(stack, tmp_path, "bob-sql", "globex")
    access = tmp_path / "access.yaml"
    text = (EXAMPLE / "access.yaml.example").read_text()
    access.write_text(
        text.replace("<user_id of party 1>", alice_id).replace("<user_id of party 2>", bob_id)
    )
    deployed = alice(
        "deploy", "--name", "sql-flow", "--access", str(access),
        "--sql", str(EXAMPLE / "queries.sql"),
        "--schema", f"input_1={EXAMPLE / 'input_1.yaml'}",
        "--schema", f"input_2={EXAMPLE / 'input_2.yaml'}",
    )  # fmt: skip
    assert "Work-ID" in deployed.stdout

    shown = bob("inspect", "sql-flow").stdout
    assert "rule of input_1" in shown and "rule of input_2" in shown
    assert "query crosstab" in shown and "threshold" in shown
    # No owner names report_suppressed: the review says the count is withheld, for each.
    assert shown.count("report_suppressed: false (how many groups fell under") == 2
    bob("approve", "sql-flow", "--yes")

    cells = write_inputs(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a_first.csv").write_text("email_sha256,segment\nxyz,retail\n")
    (bad / "customers_tokyo.csv").write_text("email_sha256,segment\nabc,retail\n,retail\n")
    refused = bob("data", "cp", str(bad), "sql-flow:input_2", ok=False)
    assert refused.returncode == 1
    assert "schema-null" in refused.stderr and "email_sha256" in refused.stderr
    assert "row 2" in refused.stderr
    # The Worker named the file by its place (2 of 2); the uploader's client names it.
    assert "file customers_tokyo.csv" in refused.stderr, refused.stderr
    alice("data", "cp", str(tmp_path / "one"), "sql-flow:input_1")
    bob("data", "cp", str(tmp_path / "two"), "sql-flow:input_2")

    ran = alice("query", "sql-flow", "--name", "crosstab", "--out", str(tmp_path / "crosstab"))
    # No owner's rule reports how many groups fell under its threshold: withheld.
    assert f"{len([n for n in cells.values() if n >= 10])} released, not reported suppressed" in (
        ran.stdout
    )
    with (tmp_path / "crosstab" / "data.csv").open() as handle:
        rows = list(csv.reader(handle))
    expected = sorted((r, s, str(n)) for (r, s), n in cells.items() if n >= 10)
    assert [tuple(row) for row in rows[1:]] == expected
    shown = json.loads(alice("query", "sql-flow", "--name", "crosstab", "--json").stdout)
    assert shown["detail"]["rows"] == {"released": len(expected), "suppressed": None}
    # Whether a group fell under the threshold says whether someone with the WHERE's
    # values is in the data: south's 5 business customers of both parties (suppressed),
    # and no retail one (nothing to suppress). The runner's two answers read alike.
    probe = (
        "SELECT a.region, b.segment, COUNT(DISTINCT a.email_sha256) AS n FROM input_1 a "
        "JOIN input_2 b ON a.email_sha256 = b.email_sha256 WHERE a.region = 'south' "
        "AND b.segment = 'SEGMENT' GROUP BY a.region, b.segment"
    )
    probes = [
        alice("query", "sql-flow", probe.replace("SEGMENT", segment)).stdout
        for segment in ("business", "retail")
    ]
    assert "0 released, not reported suppressed" in probes[0]
    masked = [re.sub(r"(run|sha256) [0-9a-f]+", r"\1 X", probe) for probe in probes]
    assert masked[0] == masked[1], masked
    assert shown["receipt"]["query"] == {"name": "crosstab"}
    assert shown["receipt"]["detail"] == hashlib.sha256(canonical(shown["detail"])).hexdigest()
    # That run was not downloaded at once (no --out): its recipient downloads it by number,
    # checked against its query receipt; without a number a SQL room's output is refused.
    later = tmp_path / "later"
    run = str(shown["receipt"]["run"])
    fetched = alice("data", "cp", "sql-flow:output_1", str(later), "--run", run)
    assert "matches the signed query receipt" in fetched.stdout
    assert (later / "data.csv").read_bytes() == (tmp_path / "crosstab" / "data.csv").read_bytes()
    no_run = alice("data", "cp", "sql-flow:output_1", str(tmp_path / "x"), ok=False)
    assert no_run.returncode == 2, no_run.stderr  # unusable input, as README defines it
    assert "sql-flow is a SQL room: each query run has its own output_1" in no_run.stderr
    not_recipient = bob("data", "cp", "sql-flow:output_1", str(tmp_path / "y"), "--run", run,
                        ok=False)  # fmt: skip
    assert not_recipient.returncode == 1 and "output-recipient" in not_recipient.stderr
    no_such = alice("data", "cp", "sql-flow:output_1", str(tmp_path / "z"), "--run", "99",
                    ok=False)  # fmt: skip
    # A run the room never had is said so, not "no receipt (yet)" as of a run still going;
    # and it is unusable input (exit 2) on the attested Worker's signed count of runs, not
    # on the Controller's relayed words (h32).
    said = (
        r"\nerror: no such run 99: the attested Worker signs that sql-flow has had \d+ query runs\n"
    )
    assert no_such.returncode == 2, no_such.stderr
    assert re.search(said, no_such.stderr), no_such.stderr
    never = alice("receipt", "sql-flow", "--run", "99", ok=False)
    assert never.returncode == 2, never.stderr
    assert re.search(said, never.stderr), never.stderr
    for command, says in (
        (("receipt", "sql-flow"), "sql-flow is a SQL room: it signs one receipt per query run"),
        (("run", "sql-flow"), "sql-flow is a SQL room: it has no run of its own"),
        (("data", "cp", "sql-flow:output_9", str(tmp_path / "z"), "--run", run), "no output"),
    ):
        misused = alice(*command, ok=False)
        assert misused.returncode == 2 and says in misused.stderr, (command, misused.stderr)
    assert not any((tmp_path / name).exists() for name in ("x", "y", "z"))

    raw = alice("query", "sql-flow", "SELECT email_sha256 FROM input_1", ok=False)
    assert raw.returncode == 1 and "aggregation.dimension_columns" in raw.stderr
    reading = alice("query", "sql-flow", "SELECT * FROM read_csv('/etc/passwd')", ok=False)
    assert reading.returncode == 1 and "sql-table" in reading.stderr
    not_runner = bob("query", "sql-flow", "--name", "overlap", ok=False)
    assert not_runner.returncode == 1 and "runner" in not_runner.stderr
    wrong_type = alice(
        "query", "sql-flow", "--name", "crosstab_in", "--param", "region=5", ok=False
    )
    # Checked against the approved spec before anything is sent: unusable input, exit 2
    # (the Worker's refusal of the same was exit 1, after a session; h32).
    assert wrong_type.returncode == 2, wrong_type.stderr
    assert wrong_type.stderr.endswith(
        "error: parameter region of query crosstab_in must be text, got int — KEY=VALUE is "
        'typed: 42, 0.5, true, null, else text; "…" forces text (--param \'zip="12345"\')\n'
    ), wrong_type.stderr
    for command, says in (
        (("--name", "nope"), "no query nope in clean room sql-flow (it has crosstab"),
        (("SELECT 1", "--param", "a=1"), "an ad-hoc query takes no parameters, got a:"),
    ):
        unusable = alice("query", "sql-flow", *command, ok=False)
        assert unusable.returncode == 2 and says in unusable.stderr, unusable.stderr

    budget = json.loads(bob("budget", "sql-flow", "--json").stdout)
    assert budget["privacy"] == {} and budget["runs"] == 4
    alice("delete", "sql-flow", "--yes")
