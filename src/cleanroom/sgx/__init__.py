"""Intel SGX structures with their exact byte formats: parse and build, never verify."""

from cleanroom.sgx.errors import SgxParseError, UnsupportedTeeError
from cleanroom.sgx.structs import (
    INTEL_QE_VENDOR_ID,
    TEE_TYPE_SGX,
    TEE_TYPE_TDX,
    AttributeFlags,
    Attributes,
    CertificationData,
    CertificationDataType,
    Quote,
    QuoteHeader,
    QuoteSignatureData,
    Report,
    ReportBody,
    TargetInfo,
    parse_quote,
)

__all__ = [
    "INTEL_QE_VENDOR_ID",
    "TEE_TYPE_SGX",
    "TEE_TYPE_TDX",
    "AttributeFlags",
    "Attributes",
    "CertificationData",
    "CertificationDataType",
    "Quote",
    "QuoteHeader",
    "QuoteSignatureData",
    "Report",
    "ReportBody",
    "SgxParseError",
    "TargetInfo",
    "UnsupportedTeeError",
    "parse_quote",
]
