"""The client SDK: what runs on the user's machine, trusted by that user alone.

- :class:`Profile` — the user's key pair, credentials, attestation policy and the
  Work-IDs they approved (``cleanroom configure`` writes one);
- :class:`ManagerClient` — functions and clean rooms at the management server;
- :class:`CleanRoomClient` — the data plane: attest, upload, run, download, receipt,
  each starting from the Work-ID the user approved.

A notebook or a pipeline uses these directly; the ``cleanroom`` command is a thin
layer over them. See the README for an example. The names are imported when first
used, so a command that needs only the profile does not load the whole SDK.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cleanroom.client.manager import ManagerClient, Room
    from cleanroom.client.profile import Profile
    from cleanroom.client.rooms import (
        Attestation,
        CleanRoomClient,
        DownloadResult,
        RoomStatus,
        TransferError,
        UploadResult,
        VerifiedReceipt,
    )

_WHERE = {
    "Attestation": "cleanroom.client.rooms",
    "CleanRoomClient": "cleanroom.client.rooms",
    "DownloadResult": "cleanroom.client.rooms",
    "ManagerClient": "cleanroom.client.manager",
    "Profile": "cleanroom.client.profile",
    "Room": "cleanroom.client.manager",
    "RoomStatus": "cleanroom.client.rooms",
    "TransferError": "cleanroom.client.rooms",
    "UploadResult": "cleanroom.client.rooms",
    "VerifiedReceipt": "cleanroom.client.rooms",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'cleanroom.client' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "Attestation",
    "CleanRoomClient",
    "DownloadResult",
    "ManagerClient",
    "Profile",
    "Room",
    "RoomStatus",
    "TransferError",
    "UploadResult",
    "VerifiedReceipt",
]
