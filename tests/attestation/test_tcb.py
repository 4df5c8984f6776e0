"""The TCB decision table, one row per case."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cleanroom.attestation.tcb import (
    DEFAULT_ACCEPTED_STATUSES,
    TCB_STATUSES,
    TcbDecision,
    decide_tcb,
)

ALL_BUT_REVOKED = frozenset(TCB_STATUSES) - {"Revoked"}
SA_289 = "INTEL-SA-00289"
SA_615 = "INTEL-SA-00615"


def test_statuses_are_dcap_qvls() -> None:
    assert set(TCB_STATUSES) == {
        "UpToDate",
        "SWHardeningNeeded",
        "ConfigurationNeeded",
        "ConfigurationAndSWHardeningNeeded",
        "OutOfDate",
        "OutOfDateConfigurationNeeded",
        "Revoked",
    }
    for meaning in TCB_STATUSES.values():
        assert len(meaning) > 100


def test_default_accepted_statuses() -> None:
    assert frozenset({"UpToDate", "SWHardeningNeeded"}) == DEFAULT_ACCEPTED_STATUSES


# (status, advisories, accepted_statuses, accepted_advisories, accepted, rule)
TABLE: list[tuple[str, tuple[str, ...], frozenset[str], frozenset[str] | None, bool, str]] = [
    # accepted
    ("UpToDate", (), DEFAULT_ACCEPTED_STATUSES, None, True, "accepted"),
    ("SWHardeningNeeded", (SA_615,), DEFAULT_ACCEPTED_STATUSES, None, True, "accepted"),
    (
        "SWHardeningNeeded",
        (SA_615,),
        DEFAULT_ACCEPTED_STATUSES,
        frozenset({SA_615}),
        True,
        "accepted",
    ),
    ("UpToDate", (), DEFAULT_ACCEPTED_STATUSES, frozenset(), True, "accepted"),
    (
        "ConfigurationAndSWHardeningNeeded",
        (SA_289, SA_615),
        ALL_BUT_REVOKED,
        None,
        True,
        "accepted",
    ),
    (
        "OutOfDate",
        (SA_289,),
        frozenset({"OutOfDate"}),
        frozenset({SA_289, SA_615}),
        True,
        "accepted",
    ),
    # unknown status: fail closed, whatever the policy says
    ("Uptodate", (), DEFAULT_ACCEPTED_STATUSES, None, False, "unknown-status"),
    ("", (), DEFAULT_ACCEPTED_STATUSES, None, False, "unknown-status"),
    (
        "TDRelaunchAdvised",
        (),
        DEFAULT_ACCEPTED_STATUSES | {"TDRelaunchAdvised"},
        None,
        False,
        "unknown-status",
    ),
    # revoked: never, even when listed
    ("Revoked", (), DEFAULT_ACCEPTED_STATUSES, None, False, "revoked"),
    ("Revoked", (), frozenset(TCB_STATUSES), None, False, "revoked"),
    ("Revoked", (SA_289,), frozenset({"Revoked"}), frozenset({SA_289}), False, "revoked"),
    # status outside the accepted set
    ("SWHardeningNeeded", (SA_615,), frozenset({"UpToDate"}), None, False, "status-not-accepted"),
    (
        "ConfigurationNeeded",
        (SA_289,),
        DEFAULT_ACCEPTED_STATUSES,
        None,
        False,
        "status-not-accepted",
    ),
    (
        "ConfigurationAndSWHardeningNeeded",
        (SA_289, SA_615),
        DEFAULT_ACCEPTED_STATUSES,
        None,
        False,
        "status-not-accepted",
    ),
    ("OutOfDate", (SA_289,), DEFAULT_ACCEPTED_STATUSES, None, False, "status-not-accepted"),
    (
        "OutOfDateConfigurationNeeded",
        (),
        DEFAULT_ACCEPTED_STATUSES,
        None,
        False,
        "status-not-accepted",
    ),
    ("UpToDate", (), frozenset(), None, False, "status-not-accepted"),
    # status checked before advisories
    ("OutOfDate", (SA_289,), DEFAULT_ACCEPTED_STATUSES, frozenset(), False, "status-not-accepted"),
    # advisories outside the allow-list
    (
        "SWHardeningNeeded",
        (SA_615,),
        DEFAULT_ACCEPTED_STATUSES,
        frozenset(),
        False,
        "advisory-not-accepted",
    ),
    (
        "ConfigurationAndSWHardeningNeeded",
        (SA_289, SA_615),
        ALL_BUT_REVOKED,
        frozenset({SA_289}),
        False,
        "advisory-not-accepted",
    ),
    (
        "UpToDate",
        (SA_289,),
        DEFAULT_ACCEPTED_STATUSES,
        frozenset({SA_615}),
        False,
        "advisory-not-accepted",
    ),
]


@pytest.mark.parametrize(
    ("status", "advisories", "accepted_statuses", "accepted_advisories", "accepted", "rule"),
    TABLE,
)
def test_decision_table(
    status: str,
    advisories: tuple[str, ...],
    accepted_statuses: frozenset[str],
    accepted_advisories: frozenset[str] | None,
    accepted: bool,
    rule: str,
) -> None:
    decision = decide_tcb(
        status,
        advisories,
        accepted_statuses=accepted_statuses,
        accepted_advisories=accepted_advisories,
    )
    assert isinstance(decision, TcbDecision)
    assert (decision.accepted, decision.rule) == (accepted, rule)
    assert decision.status == status
    assert decision.advisory_ids == advisories
    assert decision.reason
    if accepted:
        assert decision.hint is None
    else:
        assert decision.hint


def test_revoked_listed_as_accepted_says_it_is_ignored() -> None:
    decision = decide_tcb(
        "Revoked", (), accepted_statuses=frozenset({"Revoked"}), accepted_advisories=None
    )
    assert not decision.accepted
    assert "never accepted" in decision.reason
    assert "ignored" in decision.reason


def test_status_hint_names_meaning_and_how_to_accept() -> None:
    decision = decide_tcb(
        "ConfigurationAndSWHardeningNeeded",
        (SA_289, SA_615),
        accepted_statuses=DEFAULT_ACCEPTED_STATUSES,
        accepted_advisories=None,
    )
    assert decision.hint is not None
    assert TCB_STATUSES["ConfigurationAndSWHardeningNeeded"] in decision.hint
    # The flags to pass keep what was accepted and add the status: the list replaces defaults.
    assert "--accept-status ConfigurationAndSWHardeningNeeded" in decision.hint
    assert "--accept-status UpToDate" in decision.hint
    assert "--accept-status SWHardeningNeeded" in decision.hint


def test_advisory_rejection_names_the_advisory_and_how_to_accept() -> None:
    decision = decide_tcb(
        "SWHardeningNeeded",
        (SA_289, SA_615),
        accepted_statuses=DEFAULT_ACCEPTED_STATUSES,
        accepted_advisories=frozenset({SA_289}),
    )
    assert decision.rule == "advisory-not-accepted"
    assert SA_615 in decision.reason
    assert SA_289 not in decision.reason.split("(")[0]
    assert decision.hint is not None
    assert f"--accept-advisory {SA_615}" in decision.hint
    assert "intel-sa-00615.html" in decision.hint


def test_unknown_status_is_refused_even_if_listed() -> None:
    decision = decide_tcb(
        "Future", (), accepted_statuses=frozenset({"Future"}), accepted_advisories=None
    )
    assert (decision.accepted, decision.rule) == (False, "unknown-status")


statuses = st.sampled_from([*TCB_STATUSES, "TDRelaunchAdvised", "Uptodate", ""])
advisory = st.sampled_from(["INTEL-SA-00289", "INTEL-SA-00334", "INTEL-SA-00615", "X"])


@given(
    status=statuses,
    advisories=st.lists(advisory, max_size=4),
    accepted_statuses=st.frozensets(statuses),
    accepted_advisories=st.none() | st.frozensets(advisory),
)
def test_decision_invariants(
    status: str,
    advisories: list[str],
    accepted_statuses: frozenset[str],
    accepted_advisories: frozenset[str] | None,
) -> None:
    decision = decide_tcb(
        status,
        advisories,
        accepted_statuses=accepted_statuses,
        accepted_advisories=accepted_advisories,
    )
    expected = (
        status in TCB_STATUSES
        and status != "Revoked"
        and status in accepted_statuses
        and (accepted_advisories is None or set(advisories) <= accepted_advisories)
    )
    assert decision.accepted is expected
    assert (decision.hint is None) is expected
