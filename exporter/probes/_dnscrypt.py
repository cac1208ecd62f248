"""DNSCrypt v2 resolver certificates: parsing and verification against the provider key.

A TXT query for the provider name (``2.dnscrypt-cert.opendns.com``) on port 443 returns
certificates signed with the provider's Ed25519 key: the only cryptographic proof that an answer
came from Umbrella rather than from whatever sits on the path.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def provider_key_bytes(value: str) -> bytes:
    """A DNSCrypt provider public key as published (hex, colons optional) -> 32 bytes."""
    try:
        key = bytes.fromhex(value.replace(":", ""))
    except ValueError:
        raise ValueError("must be hexadecimal, colons allowed (B735:1140:...)") from None
    if len(key) != 32:
        raise ValueError(f"must be 32 bytes (64 hex digits), not {len(key)}")
    return key


_CERT_MAGIC = b"DNSC"
_CERT = struct.Struct("!4sHH64s32s8sIII")  # magic, es-version, minor, signature, signed part


@dataclass(frozen=True)
class DnsCryptCertificate:
    """A DNSCrypt v2 resolver certificate (dnscrypt.info protocol, section "Certificates")."""

    es_version: int
    signature: bytes
    signed: bytes  # resolver-pk .. extensions: what the provider key signs
    serial: int
    not_before: int
    not_after: int


def parse_certificate(blob: bytes) -> DnsCryptCertificate | None:
    """Parse a certificate TXT record; None when it is not one."""
    if len(blob) < _CERT.size or not blob.startswith(_CERT_MAGIC):
        return None
    _, es_version, _, signature, _, _, serial, not_before, not_after = _CERT.unpack_from(blob)
    return DnsCryptCertificate(es_version, signature, blob[72:], serial, not_before, not_after)


def certificate_problem(cert: DnsCryptCertificate, provider_key: bytes, now: float) -> str | None:
    """Why ``cert`` is not a valid certificate of the provider right now, or None."""
    try:
        Ed25519PublicKey.from_public_bytes(provider_key).verify(cert.signature, cert.signed)
    except InvalidSignature:
        return f"certificate serial {cert.serial} is not signed by the provider key"
    if not cert.not_before <= now <= cert.not_after:
        return (
            f"certificate serial {cert.serial} is valid {_utc(cert.not_before)} to "
            f"{_utc(cert.not_after)}, not now (a replayed certificate, or this host's clock)"
        )
    return None


def _utc(timestamp: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))
