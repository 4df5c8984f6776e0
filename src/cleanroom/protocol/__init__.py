"""The clean room's security protocol v1 (docs/protocol.md): pure, no I/O.

Both sides use it: the client SDK outside the TEE and the Worker and Attester
inside. Every object that is hashed or signed is built by one function here, from
RFC 8785 canonical JSON carrying a ``type`` for domain separation.
"""
