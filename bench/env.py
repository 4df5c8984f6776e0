"""The deployment the suite measures, built as the demo builds it: a LocalStack (a
manager and a compute server on loopback, each its own process; the compute server
starts the Attester and one Worker per clean room), users with their own profile in
a temporary CLEANROOM_HOME trusting the simulated root, and the baseline servers."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

import cleanroom
from cleanroom.client import CleanRoomClient
from cleanroom.client.access import Access, build_spec
from cleanroom.client.profile import Profile
from cleanroom.insecure.localstack import LocalStack, free_port
from cleanroom.protocol.bundle import pack
from cleanroom.protocol.spec import WorkSpec
from cleanroom.tee.reference import LocalMeasurement

REPO = Path(cleanroom.__file__).resolve().parents[2]
BENCH = Path(__file__).resolve().parent
FUNCTIONS = {
    "overlap": REPO / "examples" / "functions" / "overlap",
    "copy": BENCH / "functions" / "copy",
    "hashed_overlap": BENCH / "functions" / "hashed_overlap",
}


@dataclass
class User:
    name: str
    home: Path
    profile: Profile
    client: CleanRoomClient


def child_env() -> dict[str, str]:
    """The environment of the bench's own child processes: ``bench`` importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(BENCH.parent), env.get("PYTHONPATH", "")])
    )
    return env


class Environment:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.stack = LocalStack(root / "servers")
        self.functions: dict[tuple[str, str], str] = {}
        self.users: dict[str, User] = {}
        self._projects: set[str] = set()

    def start(self) -> Environment:
        self.stack.start()
        return self

    def close(self) -> None:
        self.stack.close()

    # -------------------------------------------------------------- users

    def user(
        self, name: str, project: str, client_class: type[CleanRoomClient] = CleanRoomClient
    ) -> User:
        if project not in self._projects:
            self.stack.add_project(project)
            self._projects.add(project)
        credentials = self.stack.add_client(project, name)
        home = self.root / "homes" / name
        profile = Profile.create(
            name,
            home,
            manager_url=self.stack.manager_url,
            client_id=credentials.client_id,
            client_secret=credentials.secret,
            project=project,
            simulator_root=self.stack.simulated_root_pem().encode(),
            reference=LocalMeasurement(),  # this checkout's enclaves, as `configure` does
        )
        with profile.login() as manager:
            manager.register_user_key(profile.user_key, credentials.client_id)
        user = User(name, home, profile, client_class(profile))
        self.users[name] = user
        return user

    def function(self, deployer: User, kind: str) -> str:
        """The function's ID; uploaded once per project (a bundle is visible to the
        projects that uploaded it)."""
        key = (deployer.profile.config.project or "", kind)
        if key not in self.functions:
            self.functions[key] = deployer.client.manager.upload_function(
                pack(FUNCTIONS[kind])
            ).function_id
        return self.functions[key]

    def spec(
        self,
        name: str,
        kind: str,
        deployer: User,
        inputs: dict[str, User],
        outputs: dict[str, User],
        *,
        parameters: dict[str, Any] | None = None,
        memory_mib: int = 2048,
        runtime: str = "python3.11",
        disk_mib: int | None = None,
    ) -> WorkSpec:
        access = Access(
            inputs={i: u.profile.user_id for i, u in inputs.items()},
            outputs={o: u.profile.user_id for o, u in outputs.items()},
        )
        return build_spec(
            name=name,
            function_id=self.function(deployer, kind),
            handler="handler.run",
            access=access,
            deployer_user_id=deployer.profile.user_id,
            runtime=runtime,
            memory_mib=memory_mib,
            disk_mib=disk_mib,
            timeout_s=3600,
            parameters=parameters or {},
        )

    def deploy(self, spec: WorkSpec, deployer: User, parties: list[User]) -> None:
        deployer.client.manager.deploy(spec)
        for user in {id(u): u for u in [deployer, *parties]}.values():
            user.profile.approve(spec.name, spec.work_id, spec.function)

    # ---------------------------------------------------------- processes

    @property
    def compute_pid(self) -> int:
        """The compute server's process: the Controller (its children: Attester, Workers)."""
        for server in self.stack._servers:
            if server.name == "compute server":
                return server.process.pid
        raise RuntimeError("no compute server")

    def worker_pid(self, room: str) -> int:
        """The room's Worker, as the Controller records it (a spare Worker assigned to
        the room has no room in its command line); rooms/<project>.<room>."""
        records = list((self.stack.compute_dir / "rooms").glob(f"*.{room}/room.json"))
        try:
            (record,) = records
            return int(json.loads(record.read_text())["pid"])
        except (OSError, ValueError, KeyError) as error:
            raise RuntimeError(f"no Worker process for {room}: {error}") from error


# ------------------------------------------------------------ baseline servers


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as handle:
        return subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "bench.servers", *argv],
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=handle,
            env=child_env(),
        )


def wait_answering(
    url: str,
    process: subprocess.Popen[bytes],
    *,
    verify: Any = True,
    uds: str | None = None,
    timeout_s: float = 30.0,
    poll_s: float = 0.01,
) -> None:
    deadline = time.monotonic() + timeout_s
    transport = httpx.HTTPTransport(uds=uds, verify=verify) if uds else None
    with httpx.Client(transport=transport, verify=verify, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"baseline server exited: {process.args}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url).status_code == 200:
                    return
            time.sleep(poll_s)
    raise RuntimeError(f"baseline server did not answer: {process.args}")


def port() -> int:
    return free_port()
