"""The Controller of a compute server: untrusted, outside the TEE (see :mod:`.app`)."""

from cleanroom.controller.app import ControllerSettings, create_app

__all__ = ["ControllerSettings", "create_app"]
