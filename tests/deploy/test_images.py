"""The deployment files, linted here since no Docker runs here: the enclave images' build
(the signing key only as a build secret, the measured manifest signed and checked, the
final images without the key), the compute server's and manager's images, the compose
file, and the build script."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", dockerfile.read_text())
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        found.append((word.upper(), " ".join(rest.split())))
    return found


def stages(dockerfile: Path) -> dict[str, list[tuple[str, str]]]:
    """Each named stage's instructions (the FROM line first)."""
    named: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for word, rest in instructions(dockerfile):
        if word == "FROM":
            name = rest.split(" AS ")[-1] if " AS " in rest else f"stage{len(named)}"
            current = named.setdefault(name, [])
        if current is not None:
            current.append((word, rest))
    return named


ENCLAVES = DEPLOY / "images" / "enclaves.Dockerfile"


def test_every_dockerfile_copies_what_the_repository_has() -> None:
    for dockerfile in (DEPLOY / "images").glob("*.Dockerfile"):
        for word, rest in instructions(dockerfile):
            if word == "COPY" and "--from=" not in rest:
                *sources, _target = rest.split()
                for source in sources:
                    assert (ROOT / source).exists(), f"{dockerfile.name}: COPY {source}"


def test_the_enclaves_are_built_on_gramines_image_and_reproducibly() -> None:
    words = instructions(ENCLAVES)
    assert ("ARG", "GRAMINE_IMAGE=gramineproject/gramine:stable-noble") in words
    app = stages(ENCLAVES)["app"]
    assert app[0] == ("FROM", "${GRAMINE_IMAGE} AS app")
    text = " ".join(rest for _word, rest in app)
    assert "SOURCE_DATE_EPOCH=0" in text  # hash-based .pyc: the same bytes in every build
    assert "venv --copies" in text  # Gramine starts the interpreter by its path: no link
    assert "cleanroom measure --write" in text
    assert "cleanroom gramine manifest worker --out /opt/cleanroom/gramine" in text
    assert "python -m cleanroom.tee.gramine.native" in text


def test_the_signing_key_is_only_ever_a_build_secret() -> None:
    for word, rest in instructions(ENCLAVES):
        if word in ("COPY", "ADD"):
            assert not re.search(r"key|\.pem", rest), rest
        if "gramine-sgx-sign" in rest:
            assert rest.startswith("--mount=type=secret,id=enclave-key,required=true ")
            assert rest.count("--key /run/secrets/enclave-key") == 2
    signed = " ".join(rest for _word, rest in stages(ENCLAVES)["signed"])
    # What is signed is checked before it is published: no debug, every file as hashed.
    for image in ("worker", "attester"):
        assert f"--manifest /opt/cleanroom/gramine/{image}.manifest " in signed
        checked = f"/opt/cleanroom/gramine/{image}.manifest.sgx --image {image} --files"
        assert f"cleanroom gramine check {checked}" in signed
        assert f"cleanroom measure --gramine /opt/cleanroom/gramine/{image}.sig" in signed
    assert "--worker-sig /opt/cleanroom/gramine/worker.sig" in signed


def test_the_final_images_hold_the_signatures_and_not_the_signing_stage() -> None:
    named = stages(ENCLAVES)
    assert named["enclaves"][0] == ("FROM", "app AS enclaves")
    copies = [rest for word, rest in named["enclaves"] if word == "COPY"]
    assert copies == ["--from=signed /opt/cleanroom/gramine/ /opt/cleanroom/gramine/"]
    assert ("ENTRYPOINT", '["/opt/cleanroom/bin/enclave-entrypoint"]') in named["enclaves"]
    for role in ("attester", "worker"):
        assert named[role][0] == ("FROM", f"enclaves AS {role}")
        assert ("CMD", f'["{role}"]') in named[role]


def test_the_compute_server_runs_the_gramine_launcher_on_gramines_image() -> None:
    words = instructions(DEPLOY / "images" / "compute.Dockerfile")
    assert ("FROM", "${GRAMINE_IMAGE}") in words
    entrypoint = next(rest for word, rest in words if word == "ENTRYPOINT")
    assert '"--tee", "gramine"' in entrypoint and '"--launcher", "docker"' in entrypoint
    manager = instructions(DEPLOY / "images" / "manager.Dockerfile")
    assert ("USER", "cleanroom") in manager  # the manager needs no root


def test_the_compose_file_gives_each_service_only_what_it_needs() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"manager", "compute"}
    for service in services.values():
        assert not service.get("privileged")
        assert service["read_only"] is True
        assert "no-new-privileges:true" in service["security_opt"]
    assert services["manager"]["cap_drop"] == ["ALL"]
    compute = services["compute"]
    assert "/var/run/docker.sock:/var/run/docker.sock" in compute["volumes"]
    assert "/dev/sgx_enclave:/dev/sgx_enclave" in compute["devices"]
    # The data directory at the same path inside and out: the Engine binds rooms by it.
    assert "/var/lib/cleanroom/compute:/var/lib/cleanroom/compute" in compute["volumes"]
    command = compute["command"]
    assert command[command.index("--attester-image") + 1].startswith("cleanroom/attester-sgx:")
    assert command[command.index("--worker-image") + 1].startswith("cleanroom/worker-sgx:")
    assert "--pccs-url" in command


@pytest.mark.parametrize("script", ["deploy/build-enclaves.sh"])
def test_the_build_script_passes_shellcheck(script: str) -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck is not None, "scripts/test.sh installs shellcheck"
    done = subprocess.run(
        [shellcheck, str(ROOT / script)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout
