"""A software model of Intel SGX: real byte formats, simulated root of trust. INSECURE.

It exists so that the whole clean room can run and be tested on machines without
SGX. Anyone who can read the platform directory can forge any enclave's reports
and quotes; a client accepts its quotes only when its profile explicitly trusts
the simulated root, and says so every time.
"""

from cleanroom.insecure.simulated.platform import (
    PlatformStateError,
    SimulatedEnclave,
    SimulatedPlatform,
)

__all__ = ["PlatformStateError", "SimulatedEnclave", "SimulatedPlatform"]
