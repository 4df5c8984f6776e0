"""A Gramine enclave's measured configuration: the trusted JSON file beside its manifest.

The manifest names the file by its SHA-256 (:mod:`cleanroom.tee.gramine.manifest`
renders both), so Gramine refuses to open it if a byte differs: what the enclave
reads here is covered by its MRENCLAVE, as a simulated enclave's manifest ``config``
is. For the Worker it names the runtimes; for the Attester, the Workers it admits.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cleanroom.errors import CheckFailed

CONFIG_TYPE = "cleanroom/gramine-enclave/v1"


class EnclaveConfigError(CheckFailed):
    """The enclave's configuration file is not this image's (a build mistake)."""


def read_enclave_config(path: Path, image: str) -> dict[str, Any]:
    """The ``config`` of ``image`` from its trusted configuration file."""
    try:
        document = json.loads(path.read_bytes())
    except (OSError, ValueError) as error:
        raise EnclaveConfigError(
            "enclave-config",
            f"the {image} image's configuration ({path})",
            str(error),
            "the enclave cannot read its measured configuration",
        ) from error
    if (
        not isinstance(document, dict)
        or document.get("type") != CONFIG_TYPE
        or document.get("image") != image
        or not isinstance(document.get("config"), dict)
    ):
        raise EnclaveConfigError(
            "enclave-config",
            f"{CONFIG_TYPE} of the {image} image",
            {k: document.get(k) for k in ("type", "image")} if isinstance(document, dict) else "",
            "the configuration file is another image's",
        )
    return dict(document["config"])
