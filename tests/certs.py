"""Throwaway certificates for the TLS tests, made with ``cryptography`` at run time.

:func:`make_certs` writes a small PKI into a temporary folder: a CA, a
server certificate for 127.0.0.1, ::1 and localhost signed by it, one
signed by it for another name, a self-signed one for 127.0.0.1 that no CA
vouches for, and a client certificate signed by the CA (for mutual TLS).
Private keys only ever exist under the test's tmp folder, never in the
repository. EC P-256 keys keep generation to milliseconds.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CertFiles", "make_certs"]


@dataclass(frozen=True)
class CertFiles:
    """Paths of the PEM files :func:`make_certs` wrote."""

    ca: Path
    server_cert: Path
    server_key: Path
    wrong_name_cert: Path
    wrong_name_key: Path
    #: For the SIP domain example.test only (no address): what a server located by
    #: DNS for sips:...@example.test must present (RFC 5922 §4.2).
    domain_cert: Path
    domain_key: Path
    self_signed_cert: Path
    self_signed_key: Path
    client_cert: Path
    client_key: Path
    #: A second, unrelated CA (trusting it trusts none of the above).
    other_ca: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
    ca: bool = False,
    usage: x509.ObjectIdentifier | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, signing_key = issuer if issuer is not None else (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def _write(
    directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None
) -> tuple[Path, Path | None]:
    cert_path = directory / f"{stem}.crt"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is None:
        return cert_path, None
    key_path = directory / f"{stem}.key"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def make_certs(directory: Path) -> CertFiles:
    """Write the test PKI into ``directory`` (a pytest tmp folder) and return the paths."""
    ca_key = _key()
    ca_cert = _certificate("sipd test CA", ca_key, None, ca=True)
    issuer = (ca_cert.subject, ca_key)
    server = "127.0.0.1"

    out: dict[str, Path] = {}
    out["ca"], _ = _write(directory, "ca", ca_cert, None)

    key = _key()
    cert = _certificate(
        "localhost",
        key,
        issuer,
        dns=("localhost",),
        ips=(server, "::1"),
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
    )
    out["server_cert"], out["server_key"] = _pair(_write(directory, "server", cert, key))

    key = _key()
    cert = _certificate(
        "other.invalid",
        key,
        issuer,
        dns=("other.invalid",),
        ips=("192.0.2.7",),
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
    )
    out["wrong_name_cert"], out["wrong_name_key"] = _pair(
        _write(directory, "wrong-name", cert, key)
    )

    key = _key()
    cert = _certificate(
        "example.test", key, issuer, dns=("example.test",), usage=ExtendedKeyUsageOID.SERVER_AUTH
    )
    out["domain_cert"], out["domain_key"] = _pair(_write(directory, "domain", cert, key))

    key = _key()
    cert = _certificate(
        "localhost",
        key,
        None,
        dns=("localhost",),
        ips=(server,),
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
    )
    out["self_signed_cert"], out["self_signed_key"] = _pair(
        _write(directory, "self-signed", cert, key)
    )

    key = _key()
    cert = _certificate("sip client", key, issuer, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    out["client_cert"], out["client_key"] = _pair(_write(directory, "client", cert, key))

    other_key = _key()
    out["other_ca"], _ = _write(
        directory, "other-ca", _certificate("unrelated CA", other_key, None, ca=True), None
    )
    return CertFiles(**out)


def _pair(paths: tuple[Path, Path | None]) -> tuple[Path, Path]:
    cert, key = paths
    assert key is not None
    return cert, key
