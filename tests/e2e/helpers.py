"""What the end-to-end and adversarial tests share: a function, deploy, approve."""

from __future__ import annotations

from pathlib import Path

from cleanroom.client.access import Access, build_spec
from cleanroom.client.review import review
from cleanroom.protocol.bundle import pack
from tests.e2e.conftest import User

HANDLER = """
import json, pathlib

def run():
    a = set(pathlib.Path("inputs/input_1/emails.csv").read_text().split())
    b = set(pathlib.Path("inputs/input_2/emails.csv").read_text().split())
    k = json.loads(pathlib.Path("parameters.json").read_text())["k"]
    for output in ("output_1", "output_2"):
        pathlib.Path("outputs", output, "overlap.json").write_text(
            json.dumps({"overlap": len(a & b), "k": k})
        )
"""


def deploy(
    alice: User,
    bob: User,
    tmp_path: Path,
    name: str,
    handler: str = HANDLER,
    *,
    runtime: str = "python3.11",
    memory_mib: int = 512,
    files: dict[str, str] | None = None,
    timeout_s: int = 60,
) -> str:
    """Alice uploads and deploys HANDLER (and ``files``: relative path -> text) for
    herself and Bob; her deploy pins the Work-ID."""
    source = tmp_path / f"function-{name}"
    source.mkdir()
    (source / "handler.py").write_text(handler)
    for relative, text in (files or {}).items():
        (source / relative).parent.mkdir(parents=True, exist_ok=True)
        (source / relative).write_text(text)
    bundle = pack(source)
    function_id = alice.client.manager.upload_function(bundle).function_id
    access = Access(
        inputs={"input_1": alice.user_id, "input_2": bob.user_id},
        outputs={"output_1": alice.user_id, "output_2": bob.user_id},
        logs="output_1",
    )
    spec = build_spec(
        name=name,
        function_id=function_id,
        handler="handler.run",
        access=access,
        deployer_user_id=alice.user_id,
        runtime=runtime,
        memory_mib=memory_mib,
        timeout_s=timeout_s,
        parameters={"k": 3},
    )
    room = alice.client.manager.deploy(spec)
    assert room.state == "deployed", room
    alice.profile.approve(name, spec.work_id, function_id, project=room.project)
    return spec.work_id


def approve(user: User, name: str) -> None:
    room = user.client.manager.room(name)
    reviewed = review(room, user.client.manager.download_function(room.function))
    user.profile.approve(name, reviewed.work_id, reviewed.function_id, project=room.project)


def write(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True)
    (directory / "emails.csv").write_text(text)
    return directory
