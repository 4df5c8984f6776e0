"""Reference values measured from this installation: the local source.

What the Attester and the Worker images installed here measure
(:func:`cleanroom.tee.measure.measure`). A client trusts these only for
development against the simulated backend; for real SGX its values come from the
release's signed measurement file (:class:`cleanroom.reference.SignedRelease`).
The command line hands this source to the client's profile, which does not import
the TEE code.
"""

from __future__ import annotations

from cleanroom.reference import ReferenceValues, ReferenceValuesUnavailable
from cleanroom.tee.measure import MeasurementError, measure

__all__ = ["LocalMeasurement"]


class LocalMeasurement:
    """This installation's enclaves, measured when their values are first asked for."""

    def __init__(self) -> None:
        self._values: ReferenceValues | None = None

    def reference_values(self) -> ReferenceValues:
        if self._values is None:
            try:
                attester, worker = measure("attester"), measure("worker")
            except MeasurementError as error:
                raise ReferenceValuesUnavailable(
                    f"cannot measure this release's enclaves: {error}"
                ) from error
            self._values = ReferenceValues(
                attester_mrenclaves=frozenset({attester.mr_enclave}),
                attester_mrsigner=attester.mr_signer,
                worker_mrenclaves=frozenset({worker.mr_enclave}),
                isv_prod_id=attester.isv_prod_id,
                min_isv_svn=attester.isv_svn,
            )
        return self._values
