"""Launchers that start a compute server's enclaves on real SGX, beside the simulated TEE's
:class:`~cleanroom.controller.enclaves.ProcessLauncher`: Gramine enclaves in containers
through the Docker Engine API, or directly with ``gramine-sgx`` (:mod:`.gramine`)."""
