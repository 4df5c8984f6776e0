"""SGX structures: exact byte formats, round trips, and only SgxParseError on bad bytes."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st

from cleanroom.errors import EXIT_USAGE, Error
from cleanroom.sgx import (
    INTEL_QE_VENDOR_ID,
    AttributeFlags,
    Attributes,
    CertificationData,
    CertificationDataType,
    Quote,
    QuoteHeader,
    QuoteSignatureData,
    Report,
    ReportBody,
    SgxParseError,
    TargetInfo,
    UnsupportedTeeError,
    parse_quote,
)


def b(size: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=size, max_size=size)


def u(bits: int) -> st.SearchStrategy[int]:
    return st.integers(min_value=0, max_value=(1 << bits) - 1)


attributes = st.builds(Attributes, flags=u(64), xfrm=u(64))
report_bodies = st.builds(
    ReportBody.create,
    mr_enclave=b(32),
    mr_signer=b(32),
    attributes=attributes,
    report_data=b(64),
    cpu_svn=b(16),
    misc_select=u(32),
    isv_ext_prod_id=b(16),
    config_id=b(64),
    isv_prod_id=u(16),
    isv_svn=u(16),
    config_svn=u(16),
    isv_family_id=b(16),
)
reports = st.builds(Report, body=report_bodies, key_id=b(32), mac=b(16))
target_infos = st.builds(
    TargetInfo.create,
    mr_enclave=b(32),
    attributes=attributes,
    config_svn=u(16),
    misc_select=u(32),
    config_id=b(64),
)
quote_headers = st.builds(
    QuoteHeader,
    version=u(16),
    attestation_key_type=u(16),
    tee_type=u(32),
    qe_svn=u(16),
    pce_svn=u(16),
    qe_vendor_id=b(16),
    user_data=b(20),
)
certification_datas = st.builds(CertificationData, cert_type=u(16), data=st.binary(max_size=600))
signature_datas = st.builds(
    QuoteSignatureData,
    isv_signature=b(64),
    attestation_key=b(64),
    qe_report=report_bodies,
    qe_report_signature=b(64),
    qe_auth_data=st.binary(max_size=300),
    certification_data=certification_datas,
)
sgx_v3_headers = st.builds(
    QuoteHeader,
    version=st.just(3),
    attestation_key_type=st.just(2),
    tee_type=st.just(0),
    qe_svn=u(16),
    pce_svn=u(16),
    qe_vendor_id=b(16),
    user_data=b(20),
)
quotes = st.builds(Quote, header=sgx_v3_headers, body=report_bodies, signature_data=signature_datas)


def sgx_header(**changes: int) -> bytes:
    fields = {"version": 3, "attestation_key_type": 2, "tee_type": 0, "qe_svn": 1, "pce_svn": 2}
    fields.update(changes)
    return QuoteHeader(**fields, qe_vendor_id=INTEL_QE_VENDOR_ID, user_data=bytes(20)).to_bytes()


# --------------------------------------------------------------- fixed layout


def test_report_body_field_offsets() -> None:
    body = ReportBody.create(
        cpu_svn=b"\x01" * 16,
        misc_select=0x02020202,
        isv_ext_prod_id=b"\x03" * 16,
        attributes=Attributes(flags=0x0404040404040404, xfrm=0x0505050505050505),
        mr_enclave=b"\x06" * 32,
        mr_signer=b"\x07" * 32,
        config_id=b"\x08" * 64,
        isv_prod_id=0x0909,
        isv_svn=0x0A0A,
        config_svn=0x0B0B,
        isv_family_id=b"\x0c" * 16,
        report_data=b"\x0d" * 64,
    )
    raw = body.to_bytes()
    assert len(raw) == ReportBody.SIZE == 384
    layout = {
        0: (16, 1), 16: (4, 2), 20: (12, 0), 32: (16, 3), 48: (8, 4), 56: (8, 5),
        64: (32, 6), 96: (32, 0), 128: (32, 7), 160: (32, 0), 192: (64, 8),
        256: (2, 9), 258: (2, 10), 260: (2, 11), 262: (42, 0), 304: (16, 12), 320: (64, 13),
    }  # fmt: skip
    for offset, (size, value) in layout.items():
        assert raw[offset : offset + size] == bytes([value]) * size, offset


def test_target_info_field_offsets() -> None:
    info = TargetInfo.create(
        mr_enclave=b"\x01" * 32,
        attributes=Attributes(flags=0x0202020202020202, xfrm=0x0202020202020202),
        config_svn=0x0303,
        misc_select=0x04040404,
        config_id=b"\x05" * 64,
    )
    raw = info.to_bytes()
    assert len(raw) == 512
    assert raw[:32] == b"\x01" * 32 and raw[32:48] == b"\x02" * 16
    assert raw[48:50] == bytes(2) and raw[50:52] == b"\x03\x03"
    assert raw[52:56] == b"\x04" * 4 and raw[56:64] == bytes(8)
    assert raw[64:128] == b"\x05" * 64 and raw[128:] == bytes(384)


def test_report_layout() -> None:
    body = ReportBody.create(
        mr_enclave=bytes(32),
        mr_signer=bytes(32),
        attributes=Attributes(0, 0),
        report_data=bytes(64),
    )
    raw = Report(body=body, key_id=b"\x11" * 32, mac=b"\x22" * 16).to_bytes()
    assert len(raw) == 432 and raw[384:416] == b"\x11" * 32 and raw[416:] == b"\x22" * 16


def test_attribute_flags() -> None:
    attrs = Attributes.from_bytes(bytes.fromhex("0500000000000000e700000000000000"))
    assert attrs.init and attrs.mode64bit and not attrs.debug
    assert attrs.xfrm == 0xE7
    assert attrs.flag_names() == ["INIT", "MODE64BIT"]
    debug = Attributes(flags=AttributeFlags.INIT | AttributeFlags.DEBUG, xfrm=0)
    assert debug.debug and debug.flag_names() == ["INIT", "DEBUG"]


# ----------------------------------------------------------------- round trips


@given(attributes)
def test_attributes_round_trip(value: Attributes) -> None:
    assert Attributes.from_bytes(value.to_bytes()) == value


@given(report_bodies)
def test_report_body_round_trip(value: ReportBody) -> None:
    assert ReportBody.from_bytes(value.to_bytes()) == value


@given(reports)
def test_report_round_trip(value: Report) -> None:
    assert Report.from_bytes(value.to_bytes()) == value


@given(target_infos)
def test_target_info_round_trip(value: TargetInfo) -> None:
    assert TargetInfo.from_bytes(value.to_bytes()) == value


@given(quote_headers)
def test_quote_header_round_trip(value: QuoteHeader) -> None:
    assert QuoteHeader.from_bytes(value.to_bytes()) == value


@given(certification_datas)
def test_certification_data_round_trip(value: CertificationData) -> None:
    raw = value.to_bytes()
    assert len(raw) == 6 + len(value.data)
    assert CertificationData.from_bytes(raw) == value


@settings(max_examples=50)
@given(signature_datas)
def test_quote_signature_data_round_trip(value: QuoteSignatureData) -> None:
    assert QuoteSignatureData.from_bytes(value.to_bytes()) == value


@settings(max_examples=50)
@given(quotes)
def test_quote_round_trip(value: Quote) -> None:
    raw = value.to_bytes()
    assert raw[:432] == value.signed_bytes()
    assert int.from_bytes(raw[432:436], "little") == len(raw) - 436
    assert Quote.from_bytes(raw) == value


def test_fixed_quote_round_trip_and_layout() -> None:
    body = ReportBody.create(
        mr_enclave=b"\xaa" * 32,
        mr_signer=b"\xbb" * 32,
        attributes=Attributes(flags=0x05, xfrm=0x03),
        report_data=b"\xcc" * 64,
    )
    signature = QuoteSignatureData(
        isv_signature=b"\x01" * 64,
        attestation_key=b"\x02" * 64,
        qe_report=body,
        qe_report_signature=b"\x03" * 64,
        qe_auth_data=b"\x04" * 5,
        certification_data=CertificationData(cert_type=5, data=b"\x05" * 7),
    )
    quote = Quote(header=QuoteHeader.from_bytes(sgx_header()), body=body, signature_data=signature)
    raw = quote.to_bytes()
    assert len(raw) == 436 + 64 + 64 + 384 + 64 + 2 + 5 + 6 + 7
    sig = raw[436:]
    assert sig[:64] == b"\x01" * 64 and sig[64:128] == b"\x02" * 64
    assert sig[128:512] == body.to_bytes() and sig[512:576] == b"\x03" * 64
    assert sig[576:578] == b"\x05\x00" and sig[578:583] == b"\x04" * 5
    assert sig[583:589] == b"\x05\x00\x07\x00\x00\x00" and sig[589:] == b"\x05" * 7
    assert Quote.from_bytes(raw) == quote
    assert QuoteSignatureData.from_bytes(sig) == signature


@given(b(384))
def test_any_384_bytes_are_a_report_body_that_round_trips(raw: bytes) -> None:
    # Reserved bytes are kept, so re-encoding is the identity even when they are set.
    assert ReportBody.from_bytes(raw).to_bytes() == raw


@given(b(512))
def test_any_512_bytes_are_a_target_info_that_round_trips(raw: bytes) -> None:
    assert TargetInfo.from_bytes(raw).to_bytes() == raw


# --------------------------------------------------------------- exact lengths

PARSERS: dict[str, tuple[Callable[[bytes], Any], int]] = {
    "attributes": (Attributes.from_bytes, 16),
    "report body": (ReportBody.from_bytes, 384),
    "report": (Report.from_bytes, 432),
    "target info": (TargetInfo.from_bytes, 512),
    "quote header": (QuoteHeader.from_bytes, 48),
}


@pytest.mark.parametrize("name", PARSERS)
@pytest.mark.parametrize("delta", [-1, 1])
def test_wrong_length_is_refused_by_name(name: str, delta: int) -> None:
    parse, size = PARSERS[name]
    with pytest.raises(SgxParseError) as caught:
        parse(bytes(size + delta))
    assert caught.value.structure == name
    assert f"exactly {size} bytes" in str(caught.value)


@pytest.mark.parametrize("delta", [-1, 1])
def test_wrong_certification_data_size_is_refused(delta: int) -> None:
    raw = CertificationData(cert_type=5, data=b"abc").to_bytes()
    with pytest.raises(SgxParseError) as caught:
        CertificationData.from_bytes(raw[:-1] if delta < 0 else raw + b"x")
    assert caught.value.structure == "certification data"


def test_quote_shorter_than_header_and_body_is_refused() -> None:
    with pytest.raises(SgxParseError, match="at least 436 bytes") as caught:
        parse_quote(bytes(47))
    assert caught.value.structure == "quote"
    with pytest.raises(SgxParseError, match=r"at least 436 bytes .*, got 435"):
        parse_quote(sgx_header() + bytes(387))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"version": 4}, "version 4 is not supported"),
        ({"version": 5}, "version 5 is not supported"),
        ({"attestation_key_type": 3}, "attestation_key_type 3 is not supported"),
    ],
)
def test_quote_header_values_are_checked(changes: dict[str, int], message: str) -> None:
    with pytest.raises(SgxParseError, match=message) as caught:
        parse_quote(sgx_header(**changes) + bytes(388))
    assert not isinstance(caught.value, UnsupportedTeeError)


@pytest.mark.parametrize("version", [3, 4, 5])
def test_any_tdx_header_is_an_unsupported_tee(version: int) -> None:
    with pytest.raises(UnsupportedTeeError, match="TDX quote") as caught:
        parse_quote(sgx_header(version=version, tee_type=0x81))
    assert isinstance(caught.value, SgxParseError) and isinstance(caught.value, Error)
    assert caught.value.exit_code == EXIT_USAGE  # malformed input, as every parse error
    assert str(caught.value).startswith("quote: this is a TDX quote")


def test_unknown_tee_type_is_an_unsupported_tee() -> None:
    with pytest.raises(UnsupportedTeeError, match="0x00000007"):
        parse_quote(sgx_header(tee_type=7) + bytes(388))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("mr_enclave", bytes(31)),
        ("report_data", bytes(65)),
        ("isv_svn", 1 << 16),
        ("misc_select", -1),
    ],
)
def test_constructor_refuses_wrong_sizes(field: str, value: Any) -> None:
    body = ReportBody.create(
        mr_enclave=bytes(32),
        mr_signer=bytes(32),
        attributes=Attributes(0, 0),
        report_data=bytes(64),
    )
    with pytest.raises(SgxParseError, match=field):
        dataclasses.replace(body, **{field: value})


@pytest.mark.parametrize(
    "build",
    [
        lambda: Attributes(flags="5", xfrm=0),  # type: ignore[arg-type]
        lambda: Attributes(flags=1 << 64, xfrm=0),
        lambda: Report(body=None, key_id=bytes(32), mac=bytes(16)),  # type: ignore[arg-type]
        lambda: TargetInfo.create(mr_enclave=bytes(32), attributes=bytes(16)),  # type: ignore[arg-type]
        lambda: TargetInfo.create(
            mr_enclave=bytes(32), attributes=Attributes(0, 0), config_id=bytes(63)
        ),
        lambda: QuoteHeader(3, 2, 0, 0, 0, bytes(15), bytes(20)),
        lambda: CertificationData(cert_type=1 << 16, data=b""),
        lambda: CertificationData(cert_type=5, data="pem"),  # type: ignore[arg-type]
        lambda: Quote(header=None, body=None, signature_data=None),  # type: ignore[arg-type]
    ],
)
def test_constructors_refuse_wrong_fields(build: Callable[[], object]) -> None:
    with pytest.raises(SgxParseError):
        build()


def test_reserved_bytes_are_checked_for_size_only() -> None:
    body = ReportBody.create(
        mr_enclave=bytes(32),
        mr_signer=bytes(32),
        attributes=Attributes(0, 0),
        report_data=bytes(64),
    )
    kept = dataclasses.replace(body, reserved=(b"\x01" * 12, bytes(32), bytes(32), bytes(42)))
    assert kept.to_bytes()[20:32] == b"\x01" * 12 and kept != body
    with pytest.raises(SgxParseError, match="reserved"):
        dataclasses.replace(body, reserved=(bytes(11), bytes(32), bytes(32), bytes(42)))


def test_attribute_flags_are_stored_as_plain_ints() -> None:
    attrs = Attributes(flags=AttributeFlags.INIT | AttributeFlags.MODE64BIT, xfrm=3)
    assert type(attrs.flags) is int and attrs == Attributes(flags=5, xfrm=3)
    # bytes-like input is accepted at run time too.
    assert Attributes.from_bytes(bytearray(attrs.to_bytes())) == attrs  # type: ignore[arg-type]


# --------------------------------------------------- only SgxParseError escapes


@pytest.mark.parametrize(
    "parse",
    [
        Attributes.from_bytes,
        ReportBody.from_bytes,
        Report.from_bytes,
        TargetInfo.from_bytes,
        QuoteHeader.from_bytes,
        QuoteSignatureData.from_bytes,
        CertificationData.from_bytes,
        parse_quote,
    ],
)
@settings(max_examples=300)
@given(data=st.binary(max_size=1200))
def test_arbitrary_bytes_parse_or_raise_sgx_parse_error(
    parse: Callable[[bytes], object], data: bytes
) -> None:
    with contextlib.suppress(SgxParseError):
        parse(data)


@settings(max_examples=300)
@given(st.binary(max_size=1500))
def test_arbitrary_tail_after_a_valid_header_and_body(tail: bytes) -> None:
    # Gets past the header checks, so the signature data's size fields are exercised.
    body = ReportBody.from_bytes(bytes(384))
    prefix = sgx_header() + body.to_bytes()
    for raw in (prefix + tail, prefix + len(tail).to_bytes(4, "little") + tail):
        with contextlib.suppress(SgxParseError):
            parse_quote(raw)


@pytest.mark.parametrize("parse", [Attributes.from_bytes, parse_quote])
@pytest.mark.parametrize("value", ["text", None, 436, [0] * 436])
def test_non_bytes_input_is_an_sgx_parse_error(
    parse: Callable[[object], object], value: object
) -> None:
    with pytest.raises(SgxParseError, match="expected bytes"):
        parse(value)


# --------------------------------------------------------- recorded evidence


@pytest.fixture(scope="module")
def real_quote(vectors_dir: Path) -> bytes:
    return (vectors_dir / "sgx-dcap-qvl" / "sgx_quote").read_bytes()


def test_real_quote_parses_exactly(real_quote: bytes) -> None:
    quote = parse_quote(real_quote)
    assert len(real_quote) == 4600
    assert quote.to_bytes() == real_quote
    header = quote.header
    assert (header.version, header.attestation_key_type, header.tee_type) == (3, 2, 0)
    assert header.qe_vendor_id == INTEL_QE_VENDOR_ID
    assert (header.qe_svn, header.pce_svn) == (10, 15)
    body = quote.body
    assert body.mr_enclave.hex() == (
        "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
    )
    assert body.mr_signer.hex() == (
        "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6"
    )
    assert body.attributes.to_bytes().hex() == "0500000000000000e700000000000000"
    assert not body.attributes.debug and body.attributes.mode64bit and body.attributes.init
    assert (body.isv_prod_id, body.isv_svn) == (0, 0)
    assert body.report_data == b"Hello, world!" + bytes(51)
    assert quote.signed_bytes() == real_quote[:432]


def test_real_quote_qe_report_binds_the_attestation_key(real_quote: bytes) -> None:
    signature = parse_quote(real_quote).signature_data
    qe = signature.qe_report
    assert qe.mr_enclave.hex() == "96b347a64e5a045e27369c26e6dcda51fd7c850e9b3a3a79e718f43261dee1e4"
    assert qe.mr_signer.hex() == "8c4f5775d796503e96137f77c68a829a0056ac8ded70140b081b094490c57bff"
    assert (qe.isv_prod_id, qe.isv_svn) == (1, 10)
    binding = hashlib.sha256(signature.attestation_key + signature.qe_auth_data).digest()
    assert qe.report_data == binding + bytes(32)


def test_real_quote_carries_the_pck_chain(real_quote: bytes) -> None:
    certification = parse_quote(real_quote).signature_data.certification_data
    assert certification.cert_type == CertificationDataType.PCK_CERT_CHAIN
    chain = [x509.load_pem_x509_certificate(pem) for pem in certification.pem_chain()]
    assert len(chain) == 3
    root = chain[-1]
    assert root.subject == root.issuer
    common_name = root.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert common_name == "Intel SGX Root CA"


@settings(max_examples=300)
@given(st.data())
def test_mutated_or_truncated_real_quote_never_crashes(
    real_quote: bytes, data: st.DataObject
) -> None:
    raw = bytearray(real_quote)
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    for _ in range(data.draw(st.integers(0, 8))):
        if raw:
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    with contextlib.suppress(SgxParseError):
        parse_quote(bytes(raw))


def test_trailing_bytes_are_refused(real_quote: bytes) -> None:
    with pytest.raises(SgxParseError, match="trailing"):
        parse_quote(real_quote + b"\x00")


def test_truncated_real_quote_is_refused(real_quote: bytes) -> None:
    with pytest.raises(SgxParseError, match="signature_data_len is 4164 but 4163") as caught:
        parse_quote(real_quote[:-1])
    assert caught.value.structure == "quote"


def test_inner_size_past_the_signature_data_is_refused(real_quote: bytes) -> None:
    raw = bytearray(real_quote)
    auth_size_offset = 436 + 64 + 64 + 384 + 64
    raw[auth_size_offset : auth_size_offset + 2] = (0xFFFF).to_bytes(2, "little")
    with pytest.raises(SgxParseError, match="QE auth data needs 65535 bytes") as caught:
        parse_quote(bytes(raw))
    assert caught.value.structure == "quote signature data"


def test_real_signature_data_parses_on_its_own(real_quote: bytes) -> None:
    quote = parse_quote(real_quote)
    assert QuoteSignatureData.from_bytes(real_quote[436:]) == quote.signature_data
    certification = quote.signature_data.certification_data
    assert CertificationData.from_bytes(certification.to_bytes()) == certification
    # The recorded chain ends with a NUL after the last PEM block; pem_chain drops it.
    assert certification.data.endswith(b"-----END CERTIFICATE-----\n\x00")


@pytest.mark.parametrize("offset", [0, 64, 320, 383])
def test_changed_body_byte_still_parses_to_another_body(real_quote: bytes, offset: int) -> None:
    raw = bytearray(real_quote)
    raw[48 + offset] ^= 0xFF
    original, changed = parse_quote(real_quote), parse_quote(bytes(raw))
    assert changed.body != original.body
    assert changed.header == original.header and changed.signature_data == original.signature_data
    assert changed.to_bytes() == bytes(raw)


def test_intel_sample_quote_has_no_pck_chain(vectors_dir: Path) -> None:
    quote = parse_quote((vectors_dir / "sgx-intel-qvl-sample" / "quote.dat").read_bytes())
    certification = quote.signature_data.certification_data
    assert (quote.header.version, quote.header.tee_type) == (3, 0)
    assert quote.to_bytes() == (vectors_dir / "sgx-intel-qvl-sample" / "quote.dat").read_bytes()
    assert certification.cert_type == CertificationDataType.PPID_CLEARTEXT
    with pytest.raises(SgxParseError, match="no PCK certificate chain"):
        certification.pem_chain()


def test_tdx_quote_is_refused_as_tdx(vectors_dir: Path) -> None:
    raw = (vectors_dir / "sgx-intel-qvl-sample" / "tdx" / "quote.dat").read_bytes()
    assert raw[:8] == bytes.fromhex("0400020081000000")  # version 4, ECDSA P-256, TDX
    with pytest.raises(UnsupportedTeeError, match=r"TDX quote \(version 4, tee_type 0x81\)"):
        parse_quote(raw)


def test_certification_data_without_certificates() -> None:
    data = CertificationData(cert_type=CertificationDataType.PCK_CERT_CHAIN, data=b"no pem here")
    with pytest.raises(SgxParseError, match="no PEM certificate"):
        data.pem_chain()


def test_pem_chain_normalises_line_endings() -> None:
    pem = b"-----BEGIN CERTIFICATE-----\r\nQUJD\r\n-----END CERTIFICATE-----"
    data = CertificationData(cert_type=5, data=pem + b"\r\n" + pem + b"\x00")
    expected = b"-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----\n"
    assert data.pem_chain() == [expected, expected]
