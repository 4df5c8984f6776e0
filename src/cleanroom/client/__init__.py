"""The client SDK: what runs on the user's machine, trusted by that user alone.

- :class:`Profile` — the user's key pair, credentials, attestation policy and the
  Work-IDs they approved (``cleanroom configure`` writes one);
- :class:`ManagerClient` — functions and clean rooms at the management server;
- :class:`CleanRoomClient` — the data plane: attest, upload, run, download, receipt,
  each starting from the Work-ID the user approved.

A notebook or a pipeline uses these directly; the ``cleanroom`` command is a thin
layer over them. See the README for an example.
"""

from cleanroom.client.manager import ManagerClient, Room
from cleanroom.client.profile import Profile
from cleanroom.client.rooms import (
    Attestation,
    CleanRoomClient,
    DownloadResult,
    TransferError,
    UploadResult,
    VerifiedReceipt,
)

__all__ = [
    "Attestation",
    "CleanRoomClient",
    "DownloadResult",
    "ManagerClient",
    "Profile",
    "Room",
    "TransferError",
    "UploadResult",
    "VerifiedReceipt",
]
