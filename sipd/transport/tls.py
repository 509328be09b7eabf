"""TLS settings for SIP over TLS (RFC 3261 §26.2, RFC 5630) and the Twisted options they make.

:class:`TlsConfig` is what a user writes: file paths, checked when the
config is made (a server needs a certificate and its key, a client needs
only the CA that signed the server's certificate). :func:`load_credentials`
reads the files once, with a :class:`~sipd.errors.ConfigError` naming the
file for anything wrong in them, so a bad path fails at start-up rather
than on the first call.

:func:`server_options` and :func:`client_options` turn them into the
connection creators Twisted's TLS layer takes. Both refuse anything older
than TLS 1.2. A client verifies the server's certificate chain against the
CA and its name against the host it dialled (service_identity checks IP
address SANs when that host is an IP literal, DNS SANs otherwise), unless
``verify=False``, which exists for labs and logs a warning. A server can
require client certificates signed by its CA (mutual TLS).

:func:`describe_tls_failure` turns what OpenSSL and service_identity raise
into a sentence a person can act on ("certificate verify failed
(self-signed certificate)"), since OpenSSL's own error only says that
verification failed, not why.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from OpenSSL import SSL
from OpenSSL.crypto import X509, X509Store, X509StoreContext, X509StoreContextError
from service_identity import VerificationError
from twisted.internet import ssl
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
)
from twisted.protocols.tls import TLSMemoryBIOProtocol
from zope.interface import implementer

from sipd.errors import ConfigError
from sipd.logs import Logger

__all__ = [
    "MINIMUM_TLS_VERSION",
    "TlsConfig",
    "TlsCredentials",
    "client_options",
    "describe_tls_failure",
    "load_credentials",
    "server_options",
]

#: Nothing older is offered or accepted (RFC 8996 deprecates TLS 1.0 and 1.1).
MINIMUM_TLS_VERSION = ssl.TLSVersion.TLSv1_2

PathLike = str | os.PathLike[str]

_log = Logger()
_warned_unverified = [False]


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """Where the TLS material is, and how strictly the peer is checked.

    ``certificate`` (PEM, the leaf first, then any intermediates) and
    ``private_key`` (PEM, unencrypted) make this side able to accept TLS
    connections, and to present a client certificate when it connects.
    ``ca_certificates`` (PEM, one or more) is what a peer's certificate must
    chain to; without it a client trusts the system's CA store.
    ``verify=False`` skips verifying the server (labs only).
    ``require_client_certificate`` makes a server refuse clients without a
    certificate signed by ``ca_certificates`` (mutual TLS).
    ``server_name`` is the name a client expects in the server's certificate
    when it differs from the host it connects to (e.g. dialling an IP address
    whose certificate names a domain).
    """

    certificate: PathLike | None = None
    private_key: PathLike | None = None
    ca_certificates: PathLike | None = None
    verify: bool = True
    require_client_certificate: bool = False
    server_name: str | None = None

    def __post_init__(self) -> None:
        for name in ("certificate", "private_key", "ca_certificates"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str | os.PathLike):
                raise ConfigError(f"tls.{name} must be a file path, not {value!r}")
            if isinstance(value, str) and not value:
                raise ConfigError(f"tls.{name} is empty: give a file path or leave it out")
        if (self.certificate is None) != (self.private_key is None):
            given, missing = (
                ("certificate", "private_key")
                if self.private_key is None
                else ("private_key", "certificate")
            )
            raise ConfigError(
                f"tls.{given} is set but tls.{missing} is not: a certificate needs its key"
            )
        if not isinstance(self.verify, bool):
            raise ConfigError(f"tls.verify must be true or false, not {self.verify!r}")
        if self.require_client_certificate and self.ca_certificates is None:
            raise ConfigError(
                "tls.require_client_certificate needs tls.ca_certificates: "
                "the CA that client certificates must be signed by"
            )
        if self.server_name is not None and (
            not isinstance(self.server_name, str) or not self.server_name.strip()
        ):
            raise ConfigError(f"tls.server_name must be a host name, not {self.server_name!r}")

    @property
    def can_serve(self) -> bool:
        """True when a certificate and key are configured (a server needs both)."""
        return self.certificate is not None and self.private_key is not None

    def check_files(self) -> None:
        """Read every file now and raise :class:`ConfigError` naming the bad one.

        A configuration loader calls this to report a broken PEM file, an
        encrypted key or a key that is not the certificate's as one line,
        before anything listens, instead of when the first connection needs it.
        """
        load_credentials(self)


@dataclass(frozen=True, slots=True)
class TlsCredentials:
    """The files of a :class:`TlsConfig`, read and checked once."""

    #: Our certificate first, then the intermediates to send with it; empty without one.
    chain: tuple[x509.Certificate, ...] = ()
    key: PrivateKeyTypes | None = None
    #: The CAs a peer must chain to; None: the system's trust store.
    authorities: tuple[X509, ...] | None = None


def load_credentials(config: TlsConfig) -> TlsCredentials:
    """Read the files ``config`` names; a :class:`ConfigError` names the bad one.

    Checks that every file exists and holds PEM of the right kind, and that
    the private key belongs to the certificate.
    """
    chain: tuple[x509.Certificate, ...] = ()
    key: PrivateKeyTypes | None = None
    if config.certificate is not None and config.private_key is not None:
        certs = _read_certificates(config.certificate, "tls.certificate")
        private = _read_private_key(config.private_key)
        if _public_der(private) != certs[0].public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ):
            raise ConfigError(
                f"tls.private_key {os.fspath(config.private_key)} does not belong to "
                f"tls.certificate {os.fspath(config.certificate)}"
            )
        chain, key = tuple(certs), private
    authorities = None
    if config.ca_certificates is not None:
        cas = _read_certificates(config.ca_certificates, "tls.ca_certificates")
        authorities = tuple(X509.from_cryptography(c) for c in cas)
    return TlsCredentials(chain, key, authorities)


def server_options(
    config: TlsConfig, credentials: TlsCredentials | None = None
) -> IOpenSSLServerConnectionCreator:
    """Options for accepting TLS: our certificate and key, TLS 1.2 or newer.

    With ``require_client_certificate`` a client must present a certificate
    that chains to ``ca_certificates``, or the handshake fails.
    """
    if not config.can_serve:
        raise ConfigError(
            "a TLS listener needs tls.certificate and tls.private_key "
            "(a client-only TlsConfig has only ca_certificates)"
        )
    creds = credentials if credentials is not None else load_credentials(config)
    assert creds.key is not None and creds.chain
    extra: dict[str, Any] = {}
    if config.require_client_certificate:
        assert creds.authorities is not None  # TlsConfig checked this
        extra["trustRoot"] = _trust_root(creds.authorities)
    # pyOpenSSL takes cryptography objects (its own X509/PKey are deprecated);
    # Twisted's annotations predate that, hence the Any-typed keywords.
    return ssl.CertificateOptions(
        raiseMinimumTo=MINIMUM_TLS_VERSION, **_own_certificate(creds), **extra
    )


def client_options(
    config: TlsConfig, hostname: str, credentials: TlsCredentials | None = None
) -> IOpenSSLClientConnectionCreator:
    """Options for connecting to ``hostname`` over TLS 1.2 or newer.

    With ``verify`` (the default) the server's chain must lead to
    ``ca_certificates`` (or the system store) and its certificate must name
    ``config.server_name or hostname``: an IP address is matched against IP
    SANs, a name against DNS SANs. Our certificate, if configured, is
    offered for mutual TLS.
    """
    creds = credentials if credentials is not None else load_credentials(config)
    host = hostname[1:-1] if hostname.startswith("[") else hostname
    extra: dict[str, Any] = {"raiseMinimumTo": MINIMUM_TLS_VERSION, **_own_certificate(creds)}
    if not config.verify:
        if not _warned_unverified[0]:
            _warned_unverified[0] = True
            _log.warn(
                "TLS server certificates are NOT verified (tls.verify is false): "
                "anyone on the path can read and change SIP traffic, first to {host}",
                host=host,
            )
        return _UnverifiedClient(ssl.CertificateOptions(**extra), host)
    authorities = creds.authorities
    trust = _system_trust() if authorities is None else _trust_root(authorities)
    return ssl.optionsForClientTLS(
        config.server_name or host, trustRoot=trust, extraCertificateOptions=extra
    )


def describe_tls_failure(
    error: BaseException, handle: object = None, credentials: TlsCredentials | None = None
) -> str:
    """Why a TLS handshake failed, in words: the reason OpenSSL or service_identity gave.

    ``handle`` is the connection's ``SSL.Connection`` (``transport.getHandle()``);
    when OpenSSL only says "certificate verify failed", the peer's chain is
    verified again against ``credentials`` to say why (self-signed, unknown
    issuer, expired...).
    """
    if isinstance(error, VerificationError):
        names = _names_of(_peer_certificate(handle))
        shown = ", ".join(names) if names else "no names"
        expected = ", ".join(_identity_text(e.mismatched_id) for e in error.errors)
        return f"certificate name mismatch: it is for {shown}, not {expected}"
    if isinstance(error, SSL.Error):
        reasons = [str(item[2]) for item in (error.args[0] if error.args else []) if len(item) >= 3]
        text = "; ".join(r for r in reasons if r) or str(error) or "TLS error"
        if "certificate verify failed" in text and handle is not None:
            why = _why_unverified(handle, credentials)
            if why:
                text = f"{text} ({why})"
        return text
    return str(error) or type(error).__name__


# -- internals ---------------------------------------------------------------------------


@implementer(IOpenSSLClientConnectionCreator)
class _UnverifiedClient:
    """Client options without verification that still send SNI for a DNS name."""

    def __init__(self, options: ssl.CertificateOptions, hostname: str) -> None:
        self._options = options
        is_ip = isIPAddress(hostname) or isIPv6Address(hostname)
        self._sni = None if is_ip else hostname.encode("idna")

    def clientConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        connection = self._options.clientConnectionForTLS(tlsProtocol)
        if self._sni is not None:
            connection.set_tlsext_host_name(self._sni)
        return connection


def _own_certificate(creds: TlsCredentials) -> dict[str, Any]:
    """Our certificate, key and chain as ``CertificateOptions`` keywords (none without)."""
    if creds.key is None or not creds.chain:
        return {}
    return {
        "privateKey": creds.key,
        "certificate": creds.chain[0],
        "extraCertChain": list(creds.chain[1:]),
    }


def _system_trust() -> Any:
    """The platform's CA store as a Twisted trust root (not annotated by Twisted)."""
    return ssl.platformTrust()  # type: ignore[no-untyped-call]


def _trust_root(authorities: tuple[X509, ...]) -> Any:
    """A Twisted trust root of exactly ``authorities`` (an ``IOpenSSLTrustRoot``).

    Typed ``Any`` because Twisted's ``trustRootFromCertificates`` is not annotated.
    """
    certs = [ssl.Certificate(ca) for ca in authorities]  # type: ignore[no-untyped-call]
    return ssl.trustRootFromCertificates(certs)  # type: ignore[no-untyped-call]


def _read(path: PathLike, setting: str) -> bytes:
    shown = os.fspath(path)
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{setting} file {shown} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{setting} {shown} is a directory, not a PEM file") from None
    except OSError as exc:
        raise ConfigError(f"{setting} file {shown} cannot be read: {exc.strerror}") from None


def _read_certificates(path: PathLike, setting: str) -> list[x509.Certificate]:
    data = _read(path, setting)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ConfigError(
            f"{setting} file {os.fspath(path)} holds no valid PEM certificate ({exc})"
        ) from None
    return certs


def _read_private_key(path: PathLike) -> PrivateKeyTypes:
    data = _read(path, "tls.private_key")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigError(
            f"tls.private_key {os.fspath(path)} is encrypted: give an unencrypted PEM key"
        ) from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError(
            f"tls.private_key file {os.fspath(path)} holds no valid PEM private key ({exc})"
        ) from None


def _public_der(key: PrivateKeyTypes) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _peer_certificate(handle: object) -> X509 | None:
    """The peer's leaf certificate (from the chain: mid-handshake there is no other)."""
    for name in ("get_peer_certificate", "get_peer_cert_chain"):
        getter = getattr(handle, name, None)
        try:
            found = getter() if getter is not None else None
        except SSL.Error:
            found = None
        if isinstance(found, list) and found:
            found = found[0]
        if isinstance(found, X509):
            return found
    return None


def _names_of(cert: X509 | None) -> list[str]:
    """The DNS and IP names a certificate is for (its SANs)."""
    if cert is None:
        return []
    try:
        san = cert.to_cryptography().extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    names: list[str] = list(san.value.get_values_for_type(x509.DNSName))
    names += [str(ip) for ip in san.value.get_values_for_type(x509.IPAddress)]
    return names


def _why_unverified(handle: object, credentials: TlsCredentials | None) -> str:
    """The reason the peer's chain does not verify, found by verifying it again."""
    getter = getattr(handle, "get_peer_cert_chain", None)
    try:
        chain = getter() if getter is not None else None
    except SSL.Error:
        chain = None
    if not chain:
        return ""
    if credentials is None or credentials.authorities is None:
        return ""  # the system store: OpenSSL's own words will have to do
    store = X509Store()
    for ca in credentials.authorities:
        store.add_cert(ca)
    try:
        X509StoreContext(store, chain[0], list(chain[1:])).verify_certificate()
    except X509StoreContextError as exc:
        return str(exc)
    return ""


def _identity_text(identity: object) -> str:
    """A service_identity pattern's name or address as text (its DNS names are bytes)."""
    value = getattr(identity, "hostname", None) or getattr(identity, "ip", "")
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
