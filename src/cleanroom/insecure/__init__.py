"""INSECURE: nothing in this package protects anything.

It holds what lets cleanroom run, be shown and be tested on machines without SGX,
fenced off under a name that says so (as pyca/cryptography fences its primitives
under ``hazmat``):

- :mod:`cleanroom.insecure.simulated`: a software model of SGX (the platform, its
  Intel-shaped PKI and root of trust, and an emulation of Gramine's
  ``/dev/attestation``). Real byte formats, real quote verification; but the
  platform's secret is a file, so whoever can read it can forge any enclave's
  reports and quotes;
- :mod:`cleanroom.insecure.policy`: attestation policies that check less than they
  should, for tests and experiments;
- :mod:`cleanroom.insecure.localstack`: a whole deployment on loopback on the
  simulated backend (``cleanroom demo``, the end-to-end tests, the benchmarks);
- :mod:`cleanroom.insecure.demodata`: fake, reproducible input data.

Only code that selects the simulation explicitly imports this package: the
``cleanroom sim`` and ``cleanroom demo`` commands, and the enclave services where
``--tee simulated`` is chosen (import-linter checks it; see pyproject.toml). A
client accepts nothing made here unless its user trusted the simulated root
explicitly (``configure --trust-simulator``, ``--trust-root``), and it says so on
every use.

This module imports nothing, so that an enclave image that carries the simulated
backend carries no more of this package than that.
"""
