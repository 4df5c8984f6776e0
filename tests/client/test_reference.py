"""Reference values as a source of their own: the release's signed measurement file, and
this installation's measurement; the profile takes its expected values from the source
it is handed, and refuses without one."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cleanroom.attestation.measurements import MeasurementsError
from cleanroom.client.profile import Profile, ProfileError
from cleanroom.reference import ReferenceValues, ReferenceValuesUnavailable, SignedRelease
from cleanroom.tee import reference as tee_reference
from cleanroom.tee.measure import MeasurementError, measure
from cleanroom.tee.reference import LocalMeasurement
from tests.attestation.test_measurements import KEY, KEY_ID, MEASUREMENTS, edited, signed

ACCOUNT = {"manager_url": "https://manager.test", "client_id": "c", "client_secret": "s"}


class Unavailable:
    """A source that has no values (as an installation that cannot be measured)."""

    def reference_values(self) -> ReferenceValues:
        raise ReferenceValuesUnavailable("cannot measure this release's enclaves: no image")


# -------------------------------------------------------------------- the sources


def test_the_signed_file_gives_the_release_values() -> None:
    data = signed()
    release = SignedRelease.verify(data, KEY.public_key())
    assert release.reference_values() == ReferenceValues(
        attester_mrenclaves=frozenset({b"\xaa" * 32}),
        attester_mrsigner=b"\xcc" * 32,
        worker_mrenclaves=frozenset({b"\xbb" * 32}),
        isv_prod_id=MEASUREMENTS.attester.isv_prod_id,
        min_isv_svn=MEASUREMENTS.attester.isv_svn,
    )
    assert release.file_sha256 == hashlib.sha256(data).hexdigest()
    assert release.key_id == KEY_ID


def test_a_changed_signed_file_gives_no_values() -> None:
    with pytest.raises(MeasurementsError) as caught:
        SignedRelease.verify(edited("attester.isv_svn", 9), KEY.public_key())
    assert caught.value.check == "measurements-signature"


def test_the_local_measurement_is_this_installation() -> None:
    attester, worker = measure("attester"), measure("worker")
    assert LocalMeasurement().reference_values() == ReferenceValues(
        attester_mrenclaves=frozenset({attester.mr_enclave}),
        attester_mrsigner=attester.mr_signer,
        worker_mrenclaves=frozenset({worker.mr_enclave}),
        isv_prod_id=attester.isv_prod_id,
        min_isv_svn=attester.isv_svn,
    )


def test_an_installation_that_cannot_be_measured_gives_no_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(image: str) -> object:
        raise MeasurementError(f"{image}: a file of the image is missing")

    monkeypatch.setattr(tee_reference, "measure", broken)
    with pytest.raises(ReferenceValuesUnavailable, match="cannot measure this release's"):
        LocalMeasurement().reference_values()


# -------------------------------------------------------------------- the profile asks


def test_the_profile_takes_the_signed_files_values_and_pins_it(tmp_path: Path) -> None:
    data = signed()
    release = SignedRelease.verify(data, KEY.public_key())
    profile = Profile.create("p", tmp_path, **ACCOUNT, reference=release)
    config = Profile.load("p", tmp_path).config
    assert config == profile.config
    assert config.attester_mrenclaves == ["aa" * 32]
    assert config.attester_mrsigner == "cc" * 32
    assert config.worker_mrenclaves == ["bb" * 32]
    assert (config.isv_prod_id, config.min_isv_svn) == (1, 1)
    assert config.release_key_sha256 == KEY_ID
    assert config.measurements is not None
    assert config.measurements.sha256 == hashlib.sha256(data).hexdigest()
    assert profile.release_key() is not None


def test_the_signed_file_takes_no_other_value(tmp_path: Path) -> None:
    release = SignedRelease.verify(signed(), KEY.public_key())
    with pytest.raises(ProfileError, match="give no other"):
        Profile.create("p", tmp_path, **ACCOUNT, reference=release, min_isv_svn=0)
    assert not (tmp_path / "profiles" / "p").exists()


def test_the_local_measurement_fills_only_what_is_not_given(tmp_path: Path) -> None:
    attester, worker = measure("attester"), measure("worker")
    profile = Profile.create("p", tmp_path, **ACCOUNT, reference=LocalMeasurement(), min_isv_svn=7)
    assert profile.config.attester_mrenclaves == [attester.mr_enclave.hex()]
    assert profile.config.attester_mrsigner == attester.mr_signer.hex()
    assert profile.config.worker_mrenclaves == [worker.mr_enclave.hex()]
    assert profile.config.isv_prod_id == attester.isv_prod_id
    assert profile.config.min_isv_svn == 7
    assert profile.config.measurements is None
    assert profile.config.release_key_sha256 is None


def test_a_source_is_not_asked_when_every_value_is_given(tmp_path: Path) -> None:
    profile = Profile.create(
        "p",
        tmp_path,
        **ACCOUNT,
        reference=Unavailable(),
        attester_mrenclaves=["aa" * 32],
        attester_mrsigner="cc" * 32,
        worker_mrenclaves=["bb" * 32],
        isv_prod_id=1,
        min_isv_svn=1,
    )
    assert profile.config.attester_mrenclaves == ["aa" * 32]


def test_without_a_source_a_missing_value_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="no expected measurements"):
        Profile.create("p", tmp_path, **ACCOUNT, attester_mrenclaves=["aa" * 32])
    assert not (tmp_path / "profiles" / "p").exists()


def test_a_source_without_values_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="cannot measure this release's enclaves: no image"):
        Profile.create("p", tmp_path, **ACCOUNT, reference=Unavailable())
    assert not (tmp_path / "profiles" / "p").exists()
