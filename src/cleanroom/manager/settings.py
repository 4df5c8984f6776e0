"""The management server's settings: where its state lives and its limits."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from cleanroom.errors import EXIT_USAGE, Error
from cleanroom.limits import (
    DEFAULT_MAX_JSON_BYTES,
    SECRET_RATE_PER_PROJECT,
    TOKEN_RATE_PER_ADDRESS,
    TOKEN_RATE_PER_CLIENT,
    RateLimit,
)
from cleanroom.tokens import DEFAULT_LEEWAY, DEFAULT_LIFETIME

DEFAULT_MAX_FUNCTION_BYTES = 1 << 30
"""1 GiB: the largest function bundle a manager accepts unless configured otherwise."""
DATABASE_FILE = "manager.db"
FUNCTIONS_DIR = "functions"
"""The directory of the function bundles, inside the data directory."""
DEFAULT_FUNCTION_GRACE = 24 * 3600
"""A day: how long an unused bundle is kept after its last upload."""
DEFAULT_ROOMS_PER_PROJECT = 32
"""Live (deploying or deployed) clean rooms one project may have at once."""
DEFAULT_CONTROLLER_CALLS = 32
"""Deploys and deletes that wait on Controllers at once, in threads apart from every
other route's (more wait for a turn, without a thread)."""
DEFAULT_CONTROLLER_TIMEOUT = 60.0
"""Seconds a deploy or a delete waits for the Controller's answer."""
DEFAULT_ABANDONED_DELETE_TIMEOUT = 15.0
"""Seconds the delete of a deploy that got no answer waits for the Controller."""
DEFAULT_CONTROLLER_CALL_WAIT = 30.0
"""Seconds a deploy or a delete waits for a turn among the controller calls."""
CLIENT_ANSWER_DEADLINE = 120.0
"""The client's deadline for a whole answer (``cleanroom.client.bounded.ANSWER_DEADLINE_S``,
which the client keeps and the manager does not import): a deploy's answer waits for its
turn, the Controller and the delete of an unanswered deploy, which must end before it."""
DEFAULT_FUNCTION_BYTES_PER_PROJECT = 16 << 30
"""16 GiB: the stored bundles one project may have uploaded (each counts for every
project that uploaded it) until garbage collection deletes them."""


@dataclass(frozen=True)
class Settings:
    """How one management server runs.

    ``public_url`` is the URL clients and Controllers reach it at; it is the
    tokens' ``iss``, so it is stored without a trailing slash. ``database_url``
    defaults to the SQLite file ``<data_dir>/manager.db``.
    """

    data_dir: Path
    public_url: str
    database_url: str | None = None
    max_function_bytes: int = DEFAULT_MAX_FUNCTION_BYTES
    token_lifetime: int = DEFAULT_LIFETIME
    controller_timeout: float = DEFAULT_CONTROLLER_TIMEOUT
    # The delete of a room whose deploy got no answer (rooms.Rooms.deploy) waits at most
    # this long (and at most controller_timeout): the deploy's answer waits for it, and
    # at 2 x controller_timeout met the client's own 120 s deadline for an answer. A
    # delete not confirmed in time leaves the room keeping its slot, and each health
    # round asks again.
    abandoned_delete_timeout: float = DEFAULT_ABANDONED_DELETE_TIMEOUT
    controller_calls: int = DEFAULT_CONTROLLER_CALLS
    # How long a deploy or a delete waits for a turn among controller_calls before it is
    # answered 503 controller-calls, nothing done: with the deploy's own 75 s
    # (controller_timeout and abandoned_delete_timeout), within the client's 120 s.
    controller_call_wait: float = DEFAULT_CONTROLLER_CALL_WAIT
    # Compute server health (cleanroom.manager.servers): a GET of each Controller's
    # /v1/health every health_interval seconds, answered within health_timeout. After
    # health_failures failures in a row a server is unhealthy; once it has also not
    # answered for lost_after seconds it is lost, and so are its live rooms.
    health_interval: float = 5.0
    health_timeout: float = 3.0
    health_failures: int = 3
    lost_after: float = 60.0
    # Function garbage collection (cleanroom.manager.storage.collect_garbage): a bundle
    # no live room uses is deleted once function_grace seconds have passed since its
    # last upload (so one uploaded for a deploy to come is kept); every gc_interval
    # seconds (0: only by `cleanroom admin gc`).
    function_grace: int = DEFAULT_FUNCTION_GRACE
    gc_interval: float = 3600.0
    # Tokens (cleanroom.tokens, cleanroom.manager.keys): the clock skew tolerated on
    # nbf/exp (a retired signing key stays published token_lifetime + token_leeway),
    # and the rate limits of /oauth/token and /oauth/revoke, per client_id from one
    # remote address and per remote address, every attempt counted (in this process's
    # memory).
    token_leeway: int = DEFAULT_LEEWAY
    token_rate_per_client: RateLimit = TOKEN_RATE_PER_CLIENT
    token_rate_per_address: RateLimit = TOKEN_RATE_PER_ADDRESS
    # The owners' routes that make a new secret (argon2id: CPU and 64 MiB each), per
    # project, in this process's memory.
    secret_rate_per_project: RateLimit = SECRET_RATE_PER_PROJECT
    # The largest request body of every endpoint except the function upload
    # (which streams, up to max_function_bytes).
    max_json_bytes: int = DEFAULT_MAX_JSON_BYTES
    # What one project may hold, so that it cannot take every compute slot or fill the
    # disk for everyone: live rooms, and the bytes of the stored bundles it uploaded.
    rooms_per_project: int = DEFAULT_ROOMS_PER_PROJECT
    function_bytes_per_project: int = DEFAULT_FUNCTION_BYTES_PER_PROJECT

    def __post_init__(self) -> None:
        object.__setattr__(self, "public_url", self.public_url.rstrip("/"))
        check_controller_waits(
            self.controller_timeout, self.abandoned_delete_timeout, self.controller_call_wait
        )

    @property
    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL of the database: the given one or the default SQLite file."""
        return self.database_url or default_database_url(self.data_dir)

    @property
    def functions_dir(self) -> Path:
        return self.data_dir / FUNCTIONS_DIR


def default_database_url(data_dir: Path) -> str:
    """The SQLite database in ``data_dir``: the default when no URL is given."""
    return f"sqlite:///{data_dir / DATABASE_FILE}"


def check_controller_waits(
    controller_timeout: float, abandoned_delete_timeout: float, controller_call_wait: float
) -> None:
    """``SettingsError`` unless each wait on Controllers is a positive, finite number of
    seconds and a deploy's answer, which may wait for all three, comes within the
    client's :data:`CLIENT_ANSWER_DEADLINE`: past it, the client gave up while the
    manager still deployed (found by h15)."""
    waits = {
        "controller_timeout (--controller-timeout)": controller_timeout,
        "abandoned_delete_timeout (--abandoned-delete-timeout)": abandoned_delete_timeout,
        "controller_call_wait (--controller-call-wait)": controller_call_wait,
    }
    for name, seconds in waits.items():
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise SettingsError(f"{name}: expected a number of seconds, found {seconds!r:.80}")
        if not (math.isfinite(seconds) and seconds > 0):
            raise SettingsError(
                f"{name}: expected a finite number of seconds above 0, found {seconds}"
            )
    total = controller_timeout + abandoned_delete_timeout + controller_call_wait
    if not total < CLIENT_ANSWER_DEADLINE:
        raise SettingsError(
            f"a deploy's answer may wait controller_call_wait ({controller_call_wait:g} s) + "
            f"controller_timeout ({controller_timeout:g} s) + abandoned_delete_timeout "
            f"({abandoned_delete_timeout:g} s) = {total:g} s: expected under the client's "
            f"{CLIENT_ANSWER_DEADLINE:g} s deadline for an answer, which would give up first "
            "while the manager still deploys"
        )


class SettingsError(Error, ValueError):
    """A setting of the manager cannot be used; the message names it."""

    http_status = 500  # this server's own failure to start: never answered
    exit_code = EXIT_USAGE
