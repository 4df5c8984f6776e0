"""What the review names is what the Worker runs, across real processes.

Alice uploads a function whose ``handler.py`` is a decoy: a package ``handler/``
beside it is what Python imports. Bob's review names the package; the real Worker
(its own process, confined) runs it, and the output Bob reads says which file ran.
"""

from __future__ import annotations

from pathlib import Path

from cleanroom.client.access import Access, build_spec
from cleanroom.protocol.bundle import pack
from tests.e2e.conftest import User
from tests.protocol.test_bundle import write_tree


def reporting(path: str) -> bytes:
    """A module whose ``run`` writes which file it is into output_1."""
    return (
        "import pathlib\n\n"
        "def run():\n"
        f"    pathlib.Path('outputs/output_1/ran.txt').write_text({path!r})\n"
    ).encode()


def test_the_worker_runs_the_module_the_review_names(
    alice: User, bob: User, tmp_path: Path
) -> None:
    source = write_tree(
        tmp_path / "decoy",
        {
            "handler.py": reporting("handler.py"),
            "handler": {"__init__.py": reporting("handler/__init__.py")},
        },
    )
    function = alice.client.manager.upload_function(pack(source)).function_id
    spec = build_spec(
        name="e2e-review",
        function_id=function,
        handler="handler.run",
        access=Access(inputs={}, outputs={"output_1": bob.user_id}, runners=(alice.user_id,)),
        deployer_user_id=alice.user_id,
        memory_mib=256,
        timeout_s=60,
    )
    assert alice.client.manager.deploy(spec).state == "deployed"
    alice.profile.approve(spec.name, spec.work_id, function)

    reviewed = bob.client.inspect("e2e-review")
    assert reviewed.handler.path == "handler/__init__.py"
    assert [w.check for w in reviewed.warnings] == ["module-shadowing"]
    bob.client.approve("e2e-review", reviewed.work_id)

    assert alice.client.run("e2e-review", wait=True).succeeded
    result = bob.client.download("e2e-review", "output_1", tmp_path / "out")
    assert (result.directory / "ran.txt").read_text() == reviewed.handler.path
    alice.client.delete("e2e-review")
