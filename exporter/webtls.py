"""TLS for the listener: Go crypto/tls names mapped onto Python's ``ssl``, per-handshake context.

The tables translate the exporter toolkit's names (prometheus/exporter-toolkit
web/tls_config.go) into what OpenSSL understands; :func:`tls_context` builds a server context
from a validated ``tls_server_config``; :class:`LiveTlsContext` is what the listener holds, so
each handshake gets the context of the web config in force.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import TYPE_CHECKING

from exporter.files import FileError, read_bounded

if TYPE_CHECKING:  # both import this module
    from exporter.webconfig import LiveWebConfig, TlsServerConfig

# Go crypto/tls version names (tls_config.go tlsVersions).
# A certificate chain, key or CA bundle larger than this is not one.
MAX_TLS_FILE_BYTES = 1 << 20

TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
# Go crypto/tls CurveID names (tls_config.go curves) -> OpenSSL group names.
CURVES = {
    "CurveP256": "prime256v1",
    "CurveP384": "secp384r1",
    "CurveP521": "secp521r1",
    "X25519": "X25519",
}
# The names Go's tls.CipherSuites() accepts, with their IANA code points (IANA "TLS Cipher
# Suites" registry). OpenSSL names them differently; the code point joins the two.
CIPHER_SUITES = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": 0x002F,
    "TLS_RSA_WITH_AES_256_CBC_SHA": 0x0035,
    "TLS_RSA_WITH_AES_128_GCM_SHA256": 0x009C,
    "TLS_RSA_WITH_AES_256_GCM_SHA384": 0x009D,
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": 0xC009,
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": 0xC00A,
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": 0xC013,
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": 0xC014,
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": 0xC02B,
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": 0xC02C,
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": 0xC02F,
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": 0xC030,
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": 0xCCA8,
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": 0xCCA9,
}
# TLS 1.3 suites are not configurable in Go either: accepted, without effect (as there).
TLS13_SUITES = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256")
CLIENT_AUTH = {
    "": ssl.CERT_NONE,
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
UNVERIFIED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert", "RequireClientCert")


class TlsFileError(Exception):
    """A TLS file or setting OpenSSL refused; ``key`` names the ``tls_server_config`` key."""

    def __init__(self, key: str, message: str) -> None:
        """Say which key and what went wrong."""
        super().__init__(message)
        self.key, self.message = key, message


def tls_context(tls: TlsServerConfig, base: Path) -> ssl.SSLContext:
    """The server context for a validated ``tls_server_config``, file names relative to ``base``.

    Raises TlsFileError when a file cannot be loaded or a cipher suite is not available.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_VERSIONS[tls.min_version]
    context.maximum_version = TLS_VERSIONS[tls.max_version]
    cert, key = base / (tls.cert_file or ""), base / (tls.key_file or "")  # both checked set
    _check_regular(cert, "cert_file")
    _check_regular(key, "key_file")
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        message = f"cannot load {cert} with {key}: {exc.strerror or exc}"
        raise TlsFileError("cert_file", message) from None
    context.verify_mode = CLIENT_AUTH[tls.client_auth_type]
    if context.verify_mode != ssl.CERT_NONE:
        _load_client_cas(context, tls, base)
    if tls.cipher_suites:
        _set_cipher_suites(context, tls.cipher_suites)
    if not tls.prefer_server_cipher_suites:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    for curve in tls.curve_preferences:
        context.set_ecdh_curve(CURVES[curve])
    return context


def _load_client_cas(context: ssl.SSLContext, tls: TlsServerConfig, base: Path) -> None:
    """The client CA from the file or inline; without one, the system store (as Go does)."""
    if tls.client_ca_file:
        _check_regular(base / tls.client_ca_file, "client_ca_file")
    try:
        if tls.client_ca_file:
            context.load_verify_locations(cafile=base / tls.client_ca_file)
        elif tls.client_ca:
            context.load_verify_locations(cadata=tls.client_ca)
        else:
            context.load_default_certs(ssl.Purpose.CLIENT_AUTH)
    except (OSError, ssl.SSLError) as exc:
        key = "client_ca_file" if tls.client_ca_file else "client_ca"
        raise TlsFileError(key, f"cannot load the client CA: {exc.strerror or exc}") from None


def _check_regular(path: Path, key: str) -> None:
    """OpenSSL opens the file itself: refuse a FIFO, a device or a huge file before it does.

    A FIFO would block the open forever, ``/dev/zero`` would be read without end.
    """
    try:
        read_bounded(path, MAX_TLS_FILE_BYTES)
    except FileError as exc:
        raise TlsFileError(key, f"{path}: {exc}") from None


def _set_cipher_suites(context: ssl.SSLContext, names: list[str]) -> None:
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    probe.set_ciphers("ALL:@SECLEVEL=0")
    openssl_names = {c["id"] & 0xFFFF: c["name"] for c in probe.get_ciphers()}
    chosen = []
    for name in names:
        if name in TLS13_SUITES:
            continue
        code = CIPHER_SUITES[name]
        if code not in openssl_names:
            raise TlsFileError("cipher_suites", f"{name} is not available in this OpenSSL")
        chosen.append(openssl_names[code])
    if chosen:
        context.set_ciphers(":".join(chosen))


class LiveTlsContext(ssl.SSLContext):
    """The listener's SSLContext: hands each new connection the context in force.

    asyncio wraps every accepted connection with ``SSLContext.wrap_bio``; delegating it to the
    context of the latest valid web config gives each handshake the current certificate, client
    CA, versions and ciphers, as the toolkit's ``GetConfigForClient`` does.
    """

    live: LiveWebConfig

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        """Wrap with the context now in force (see the class docstring)."""
        context = self.live.tls_context()
        return context.wrap_bio(incoming, outgoing, server_side, server_hostname, session)


def listener_tls(live: LiveWebConfig) -> ssl.SSLContext | None:
    """The SSLContext to listen with (None for plain HTTP), following ``live``."""
    if live.config.tls is None:
        return None
    context = LiveTlsContext(ssl.PROTOCOL_TLS_SERVER)
    context.live = live
    return context
