"""cleanroom: a data clean room on trusted execution environments (Intel SGX)."""

__version__ = "0.1.0"
