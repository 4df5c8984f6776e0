"""Intel SGX structures with their exact byte formats: parse and build, never verify."""

from cleanroom.sgx.errors import SgxParseError, UnsupportedTeeError
from cleanroom.sgx.keyrequest import KEY_POLICY_RESERVED, KeyName, KeyPolicy, KeyRequest
from cleanroom.sgx.sigstruct import SIGSTRUCT_VENDOR_INTEL, SigStruct
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
    "KEY_POLICY_RESERVED",
    "SIGSTRUCT_VENDOR_INTEL",
    "TEE_TYPE_SGX",
    "TEE_TYPE_TDX",
    "AttributeFlags",
    "Attributes",
    "CertificationData",
    "CertificationDataType",
    "KeyName",
    "KeyPolicy",
    "KeyRequest",
    "Quote",
    "QuoteHeader",
    "QuoteSignatureData",
    "Report",
    "ReportBody",
    "SgxParseError",
    "SigStruct",
    "TargetInfo",
    "UnsupportedTeeError",
    "parse_quote",
]
