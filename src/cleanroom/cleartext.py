"""Where a client secret may go: never across a network in the clear.

A user's client secret (and a compute server's, towards the manager) is sent to the
manager's token endpoint, and every token the manager issues comes back the same way.
Over ``http://`` to another machine, whoever is on the path reads them. ``http://`` is
taken only for a loopback address: a manager on this machine, or one reached through a
tunnel (``ssh -L``).
"""

from __future__ import annotations

import ipaddress
import urllib.parse

from cleanroom.errors import EXIT_USAGE, CheckFailed


class CleartextSecret(CheckFailed):
    """A client secret would be sent over plain HTTP to another machine."""

    exit_code = EXIT_USAGE  # the manager URL is the user's (or the operator's) own input


def check_secret_transport(url: str) -> None:
    """Refuse a manager ``url`` that the client secret would cross a network to in the
    clear (check ``manager-url``): ``https://``, or ``http://`` to a loopback address only
    (a manager on this machine, or one reached through an SSH tunnel)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http":
        return  # https://, or no URL at all: the profile's own check refuses that
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise CleartextSecret(
            "manager-url",
            "https://, or http:// to a loopback address",
            url[:200],
            "the client secret and every token would cross the network in the clear",
            "give the manager's https:// URL, or reach it through a tunnel on 127.0.0.1",
        )
