"""``cleanroom demo``: the whole flow, two organisations, on the embedded default.

In a temporary directory it starts a management server and a compute server on
free loopback ports (the compute server starts the Attester and the Worker as
their own processes), creates two organisations' users, and walks through every
step, saying what each one verified:

1. Alice (acme) uploads ``examples/functions/overlap`` and deploys it with an
   access file naming her and Bob (globex); her deploy pins its Work-ID;
2. Bob fetches the spec and the function bytes, recomputes the function ID and
   the Work-ID, and approves them;
3. both attest the Worker (Phase 1) and upload generated customer lists through
   signed sessions (Phase 2) as encrypted records;
4. Alice runs it; each downloads their own output, checked against the signed run
   receipt; a few things that must be refused are refused (what bob may not do, by his
   client before anything is sent, and by the Worker when a client skips that check);
5. the clean room is deleted, the servers stopped and the directory removed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from cleanroom.cli.common import EXIT_USAGE, fail, stdout
from cleanroom.client.access import Access, build_spec
from cleanroom.client.errors import ServerError
from cleanroom.client.profile import Profile
from cleanroom.client.rooms import CleanRoomClient
from cleanroom.errors import CheckFailed
from cleanroom.insecure.demodata import write_overlap_inputs
from cleanroom.insecure.localstack import LocalStack
from cleanroom.protocol.bundle import pack
from cleanroom.tee.reference import LocalMeasurement


def examples() -> Path:
    """The examples shipped in the package (``cleanroom/examples``, package data): found
    the same way in a checkout and in an installed wheel."""
    return Path(str(resources.files("cleanroom") / "examples"))


def _say(step: str, text: str) -> None:
    stdout.print(Text.assemble((step, "bold"), " ", text))


def _ok(text: str) -> None:
    stdout.print(Text.assemble("    ", ("✓", "green"), " ", text))


def _must_refuse(what: str, action: Callable[[], object]) -> None:
    """Do what must be refused, and say by whom; the demo stops if it was not refused."""
    try:
        action()
    except (CheckFailed, ServerError) as error:
        _refused(what, error)
        return
    fail(f"demo stopped: {what} was NOT refused")


def _must_refuse_twice(what: str, client: CleanRoomClient, action: Callable[[], object]) -> None:
    """Do what the client itself must refuse (by the approved spec, before anything is
    sent), then the same from a client without that check, as a modified one would be:
    the Worker must refuse it by the same rule. The demo stops otherwise."""
    _must_refuse(what, action)
    setattr(client, "permitted", lambda *_: None)  # noqa: B010 (this instance only)
    try:
        action()
    except ServerError as error:
        if error.check is None:
            fail(f"demo stopped: {what}, past the client's check, was refused by the "
                 f"{error.who} ({error.status}), not by the Worker")  # fmt: skip
        _refused(f"{what} past the client's own check", error)
        return
    except CheckFailed as error:
        fail(f"demo stopped: {what}, past the client's check, was refused by the client "
             f"again ({error.check}), not by the Worker")  # fmt: skip
    finally:
        delattr(client, "permitted")
    fail(f"demo stopped: {what}, past the client's check, was NOT refused by the Worker")


def _refused(what: str, error: CheckFailed | ServerError) -> None:
    """A refusal the demo provoked: by the client itself, or relayed from the Worker."""
    if isinstance(error, ServerError):
        # A named check is the Worker's, relayed; otherwise the server itself refused.
        where = "the Worker" if error.check else f"the {error.who}"
        check, message = error.check or str(error.status), error.detail
    else:
        where, check, message = "the client", error.check, error.message
    line = Text.assemble("    ", ("✓ refused", "green"), f" {what}, by {where}: ")
    line.append(str(check), style="dim")
    line.append(f" — {message}")
    stdout.print(line)


def _user(stack: LocalStack, root: Path, name: str, project: str) -> CleanRoomClient:
    credentials = stack.add_client(project, name)
    profile = Profile.create(
        name,
        root / f"home-{name}",
        manager_url=stack.manager_url,
        client_id=credentials.client_id,
        client_secret=credentials.secret,
        project=project,
        simulator_root=stack.simulated_root_pem().encode(),
        reference=LocalMeasurement(),
    )
    with profile.login() as manager:
        manager.register_user_key(profile.user_key, credentials.client_id)
    return CleanRoomClient(profile)


def demo(
    rows: Annotated[
        int, typer.Option(help="Customers per party in the generated data.", min=10)
    ] = 100_000,
    k: Annotated[
        int, typer.Option(help="Suppress cross-tab cells below k customers.", min=1)
    ] = 250,
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the temporary directory (its path is printed).")
    ] = False,
) -> None:
    """Run the whole clean-room flow for two organisations on this machine.

    Starts a manager and a compute server (simulated SGX) on free loopback ports in
    a temporary directory, and shows what every step verified. Needs root (the
    compute server runs each function as a uid of its own) and the python3.11
    runtime (`cleanroom runtime install python3.11`). INSECURE by design: the
    simulated TEE protects nothing; it shows the protocol, not the hardware.
    """
    function_dir = examples() / "functions" / "overlap"
    if not (function_dir / "handler.py").is_file():
        fail(f"the overlap example is missing: {function_dir}", EXIT_USAGE)
    if os.geteuid() != 0:
        fail(
            "the compute server runs each function as a uid of its own, which needs root: "
            "run the demo as root (sudo)",
            EXIT_USAGE,
        )
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="cleanroom-demo-"))
    stdout.print(
        "Simulated SGX: insecure by design; both users trust the simulator's root explicitly.",
        style="bold red",
    )
    try:
        with LocalStack(root / "servers") as stack:
            _flow(stack, root, function_dir, rows, k)
    except (CheckFailed, ServerError) as error:  # says that the demo stopped there
        fail(f"demo stopped: {error}")
    finally:
        if keep:
            stdout.print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    stdout.print(Text.assemble(("done", "bold green"), f" in {time.monotonic() - started:.1f} s"))


def _flow(stack: LocalStack, root: Path, function_dir: Path, rows: int, k: int) -> None:
    _say("servers", f"manager {stack.manager_url}, compute server {stack.compute_url}")
    stack.add_project("acme")
    stack.add_project("globex")
    alice = _user(stack, root, "alice", "acme")
    bob = _user(stack, root, "bob", "globex")
    _ok(f"alice (acme) user_id {alice.profile.user_id}")
    _ok(f"bob (globex) user_id {bob.profile.user_id}")

    _say("1. upload + deploy", "alice packs examples/functions/overlap and deploys it")
    function_id = alice.manager.upload_function(pack(function_dir)).function_id
    _ok(f"function {function_id}: the hash of the bytes sent, and the ID the manager answered")
    access = Access(
        inputs={"input_1": alice.profile.user_id, "input_2": bob.profile.user_id},
        outputs={"output_1": alice.profile.user_id, "output_2": bob.profile.user_id},
    )
    spec = build_spec(
        name="overlap",
        function_id=function_id,
        handler="handler.run",
        access=access,
        deployer_user_id=alice.profile.user_id,
        memory_mib=1024,
        timeout_s=300,
        parameters={"k": k},
    )
    room = alice.manager.deploy(spec)
    alice.profile.approve("overlap", spec.work_id, function_id, project=room.project)
    _ok(f"clean room overlap deployed on {room.compute_url} (step 3 attests its Worker)")
    _ok(f"alice pinned the Work-ID of the spec she built: {spec.work_id}")

    _say("2. review + approve", "bob fetches the spec and the function bytes")
    _must_refuse(
        "bob's upload before he approved", lambda: bob.upload("overlap", "input_2", function_dir)
    )
    reviewed = bob.inspect("overlap")
    bob.approve("overlap", reviewed.work_id)
    _ok(f"function ID recomputed from {len(reviewed.files)} files: {reviewed.function_id}")
    _ok(f"handler {reviewed.spec.handler} is in {reviewed.handler.path}, as the Worker imports it")
    _ok(f"Work-ID recomputed from the spec and pinned: {reviewed.work_id}")

    _say("3. attest", "each party runs Phase 1 against its own policy")
    for name, client in (("alice", alice), ("bob", bob)):
        attestation = client.attest("overlap")
        checks = ", ".join(check.check for check in attestation.checks)
        _ok(f"{name}: {len(attestation.checks)} checks passed ({checks})")

    _say("4. upload", f"generated customer lists, {rows:,} rows each")
    truth = write_overlap_inputs(root / "data-alice", root / "data-bob", rows, seed=7)
    for name, client, input_id in (("alice", alice, "input_1"), ("bob", bob, "input_2")):
        source = root / f"data-{name}"
        uploaded = client.upload("overlap", input_id, source)
        _ok(
            f"{name} → {input_id}: {uploaded.bytes:,} bytes as encrypted records, "
            f"manifest {uploaded.sha256[:16]}…"
        )
    _must_refuse_twice(
        "bob uploading alice's input",
        bob,
        lambda: bob.upload("overlap", "input_1", root / "data-bob"),
    )

    _say("5. run", "alice starts the run (she is the only runner)")
    _must_refuse_twice("bob starting the run", bob, lambda: bob.run("overlap"))
    ended = alice.run("overlap", wait=True, poll_s=0.2)
    if not ended.succeeded:
        fail(f"the run: {ended.summary()}")
    _ok(
        f"{ended.summary()}, says the Worker's status, signed for alice's fresh nonce "
        f"by the Worker she attested"
    )

    _say("6. download + receipt", "each party reads only its own output")
    for name, client, output_id in (("alice", alice, "output_1"), ("bob", bob, "output_2")):
        result = client.download("overlap", output_id, root / f"result-{name}")
        receipt = result.receipt.receipt
        outcome = json.loads((result.directory / "result.json").read_text())
        if outcome["overlap"] != truth.overlap:
            fail(f"demo stopped: {name} sees overlap {outcome['overlap']}, not {truth.overlap}")
        _ok(
            f"{name} ← {output_id}: receipt {receipt['status']}, signed by the attested "
            f"Worker; manifest {result.sha256[:16]}… matches it"
        )
        _ok(
            f"{name} sees: overlap {outcome['overlap']:,} customers, as generated; "
            f"{len(outcome['crosstab'])} cells released, "
            f"{outcome['suppressed']['cells']} cells / {outcome['suppressed']['customers']} "
            f"customers suppressed below k={k}"
        )
    _must_refuse_twice(
        "bob reading alice's output",
        bob,
        lambda: bob.download("overlap", "output_1", root / "stolen"),
    )

    _say("7. delete", "the Worker erases its keys and workspace")
    deleted = alice.delete("overlap")
    _ok(f"the manager says: {deleted.state}")
    _must_refuse("attesting the deleted clean room", lambda: alice.attest("overlap"))
