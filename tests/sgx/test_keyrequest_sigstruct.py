"""KEYREQUEST and SIGSTRUCT: every field at the offset the SDM (and Gramine's sgx_arch.h) gives."""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cleanroom.sgx import (
    Attributes,
    KeyName,
    KeyPolicy,
    KeyRequest,
    SgxParseError,
    SigStruct,
)
from cleanroom.sgx.sigstruct import SIGSTRUCT_HEADER, SIGSTRUCT_HEADER2


def b(size: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=size, max_size=size)


def u(bits: int) -> st.SearchStrategy[int]:
    return st.integers(min_value=0, max_value=(1 << bits) - 1)


attributes = st.builds(Attributes, flags=u(64), xfrm=u(64))

key_requests = st.builds(
    KeyRequest,
    key_name=u(16),
    key_policy=u(16),
    isv_svn=u(16),
    cpu_svn=b(16),
    attribute_mask=attributes,
    key_id=b(32),
    misc_mask=u(32),
    config_svn=u(16),
    reserved=st.tuples(b(2), b(434)),
)

sigstructs = st.builds(
    SigStruct,
    vendor=u(32),
    date=u(32),
    sw_defined=u(32),
    modulus=b(384),
    exponent=u(32),
    signature=b(384),
    misc_select=u(32),
    misc_mask=u(32),
    cet_attributes=u(8),
    cet_attributes_mask=u(8),
    isv_family_id=b(16),
    attributes=attributes,
    attribute_mask=attributes,
    enclave_hash=b(32),
    isv_ext_prod_id=b(16),
    isv_prod_id=u(16),
    isv_svn=u(16),
    q1=b(384),
    q2=b(384),
    reserved=st.tuples(b(84), b(2), b(16), b(12)),
)


# ------------------------------------------------------------------ KEYREQUEST


def test_key_request_fields_sit_at_the_sdm_offsets() -> None:
    request = KeyRequest(
        key_name=KeyName.REPORT_KEY,
        key_policy=KeyPolicy.MRSIGNER,
        isv_svn=0x0102,
        cpu_svn=bytes(range(16)),
        attribute_mask=Attributes(flags=0x1122334455667788, xfrm=0x99),
        key_id=bytes(range(100, 132)),
        misc_mask=0xA1B2C3D4,
        config_svn=0x0506,
    )
    raw = request.to_bytes()
    assert len(raw) == KeyRequest.SIZE == 512
    assert struct.unpack_from("<HHH", raw, 0) == (3, 2, 0x0102)
    assert raw[6:8] == bytes(2)
    assert raw[8:24] == bytes(range(16))
    assert raw[24:40] == Attributes(flags=0x1122334455667788, xfrm=0x99).to_bytes()
    assert raw[40:72] == bytes(range(100, 132))
    assert struct.unpack_from("<IH", raw, 72) == (0xA1B2C3D4, 0x0506)
    assert raw[78:] == bytes(434)


@given(key_requests)
def test_key_request_round_trips(request: KeyRequest) -> None:
    assert KeyRequest.from_bytes(request.to_bytes()) == request


@pytest.mark.parametrize("size", [0, 511, 513])
def test_key_request_of_the_wrong_size_is_refused(size: int) -> None:
    with pytest.raises(SgxParseError, match="exactly 512 bytes"):
        KeyRequest.from_bytes(bytes(size))


def test_key_request_fields_are_checked() -> None:
    with pytest.raises(SgxParseError, match="key_id"):
        KeyRequest(key_name=3, key_id=bytes(31))
    with pytest.raises(SgxParseError, match="key_name"):
        KeyRequest(key_name=1 << 16)


# ------------------------------------------------------------------ SIGSTRUCT


def sample_sigstruct() -> SigStruct:
    return SigStruct(
        vendor=0,
        date=0x20250614,
        sw_defined=0,
        modulus=bytes([1]) * 384,
        exponent=3,
        signature=bytes([2]) * 384,
        misc_select=0x11,
        misc_mask=0xFFFFFFFF,
        cet_attributes=0,
        cet_attributes_mask=0,
        isv_family_id=bytes([3]) * 16,
        attributes=Attributes(flags=0x4, xfrm=0x3),
        attribute_mask=Attributes(flags=0xFFFFFFFFFFFFFFFF, xfrm=0xFFFFFFFFFFF9FF1B),
        enclave_hash=bytes([4]) * 32,
        isv_ext_prod_id=bytes([5]) * 16,
        isv_prod_id=0x0102,
        isv_svn=0x0304,
        q1=bytes([6]) * 384,
        q2=bytes([7]) * 384,
    )


def test_sigstruct_fields_sit_at_the_sdm_offsets() -> None:
    raw = sample_sigstruct().to_bytes()
    assert len(raw) == SigStruct.SIZE == 1808
    assert raw[0:16] == SIGSTRUCT_HEADER
    assert struct.unpack_from("<II", raw, 16) == (0, 0x20250614)
    assert raw[24:40] == SIGSTRUCT_HEADER2
    assert raw[128:512] == bytes([1]) * 384
    assert struct.unpack_from("<I", raw, 512) == (3,)
    assert raw[516:900] == bytes([2]) * 384
    assert struct.unpack_from("<II", raw, 900) == (0x11, 0xFFFFFFFF)
    assert raw[912:928] == bytes([3]) * 16
    assert raw[928:944] == Attributes(flags=0x4, xfrm=0x3).to_bytes()
    assert raw[960:992] == bytes([4]) * 32
    assert raw[1008:1024] == bytes([5]) * 16
    assert struct.unpack_from("<HH", raw, 1024) == (0x0102, 0x0304)
    assert raw[1040:1424] == bytes([6]) * 384
    assert raw[1424:1808] == bytes([7]) * 384


def test_sigstruct_mrsigner_is_the_sha256_of_the_little_endian_modulus() -> None:
    sigstruct = sample_sigstruct()
    assert sigstruct.mr_signer == hashlib.sha256(bytes([1]) * 384).digest()
    assert sigstruct.mr_enclave == bytes([4]) * 32


def test_sigstruct_signed_bytes_are_the_two_regions_the_sdm_names() -> None:
    sigstruct = sample_sigstruct()
    raw = sigstruct.to_bytes()
    signed = sigstruct.signed_bytes()
    assert signed == raw[0:128] + raw[900:1028]
    assert len(signed) == 256
    # The modulus, signature, Q1 and Q2 are outside what is signed.
    unsigned = SigStruct.from_bytes(raw[:128] + bytes(772) + raw[900:1040] + bytes(768))
    assert unsigned.signed_bytes() == signed


@given(sigstructs)
def test_sigstruct_round_trips(sigstruct: SigStruct) -> None:
    assert SigStruct.from_bytes(sigstruct.to_bytes()) == sigstruct


@pytest.mark.parametrize("size", [0, 1807, 1809, 432])
def test_sigstruct_of_the_wrong_size_is_refused(size: int) -> None:
    with pytest.raises(SgxParseError, match="exactly 1808 bytes"):
        SigStruct.from_bytes(bytes(size))


@pytest.mark.parametrize("offset", [0, 15, 24, 39])
def test_sigstruct_with_another_header_is_refused(offset: int) -> None:
    raw = bytearray(sample_sigstruct().to_bytes())
    raw[offset] ^= 0x01
    with pytest.raises(SgxParseError, match="not a SIGSTRUCT"):
        SigStruct.from_bytes(bytes(raw))
