"""TLS settings and the Twisted options built from them: sipd.transport.tls.

Every mistake a user can make in the settings must come back as a
:class:`~sipd.errors.ConfigError` naming the setting and the file; the
options must never offer less than TLS 1.2, must verify the peer unless
told not to, and must require a client certificate only when asked.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from OpenSSL import SSL
from service_identity import VerificationError
from service_identity.exceptions import IPAddressMismatch
from service_identity.hazmat import IPAddress_ID
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
)
from twisted.logger import LogEvent, formatEvent, globalLogPublisher

from sipd import ConfigError
from sipd.transport import tls as tls_module
from sipd.transport.tls import (
    TlsConfig,
    client_options,
    describe_tls_failure,
    load_credentials,
    server_options,
)
from tests.certs import CertFiles, make_certs


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_certs(tmp_path_factory.mktemp("certs"))


def _context_options(options: Any) -> int:
    """The options bitmask of the OpenSSL context the Twisted options make."""
    context: SSL.Context = options.getContext()
    return int(context.set_options(0))  # OR-ing nothing returns what is set


# -- TlsConfig ------------------------------------------------------------------------------


def test_the_design_signature_works_positionally_and_defaults_to_verifying() -> None:
    config = TlsConfig(None, None, "/etc/ssl/ca.pem")
    assert config.verify is True and config.require_client_certificate is False
    assert not config.can_serve
    assert TlsConfig("c.pem", "k.pem").can_serve


def test_a_certificate_without_its_key_is_refused_naming_both() -> None:
    with pytest.raises(ConfigError, match=r"tls\.certificate is set but tls\.private_key"):
        TlsConfig(certificate="server.pem")
    with pytest.raises(ConfigError, match=r"tls\.private_key is set but tls\.certificate"):
        TlsConfig(private_key="server.key")


def test_requiring_client_certificates_needs_a_ca() -> None:
    with pytest.raises(
        ConfigError, match=re.escape("require_client_certificate needs tls.ca_certificates")
    ):
        TlsConfig("c.pem", "k.pem", require_client_certificate=True)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"ca_certificates": ""}, "tls.ca_certificates is empty"),
        ({"ca_certificates": 42}, "must be a file path"),
        ({"verify": "no"}, "tls.verify must be true or false"),
        ({"server_name": " "}, "tls.server_name must be a host name"),
    ],
)
def test_values_of_the_wrong_kind_are_refused(kwargs: dict[str, Any], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        TlsConfig(**kwargs)


def test_the_config_is_frozen() -> None:
    config = TlsConfig()
    with pytest.raises(AttributeError):
        config.verify = False  # type: ignore[misc]


# -- reading the files ------------------------------------------------------------------------


def test_a_missing_file_is_named(tmp_path: Path, certs: CertFiles) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(
        ConfigError, match=re.escape(f"tls.ca_certificates file {missing} does not exist")
    ):
        load_credentials(TlsConfig(ca_certificates=missing))
    with pytest.raises(
        ConfigError, match=re.escape(f"tls.certificate file {missing} does not exist")
    ):
        load_credentials(TlsConfig(missing, certs.server_key))
    with pytest.raises(
        ConfigError, match=re.escape(f"tls.private_key file {missing} does not exist")
    ):
        load_credentials(TlsConfig(certs.server_cert, missing))


def test_a_file_without_pem_is_named(tmp_path: Path, certs: CertFiles) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=re.escape(f"{junk} holds no valid PEM certificate")):
        load_credentials(TlsConfig(ca_certificates=junk))
    with pytest.raises(ConfigError, match=re.escape(f"{junk} holds no valid PEM private key")):
        load_credentials(TlsConfig(certs.server_cert, junk))
    with pytest.raises(ConfigError, match=re.escape("is a directory")):
        load_credentials(TlsConfig(ca_certificates=tmp_path))


def test_a_key_of_another_certificate_is_refused(certs: CertFiles) -> None:
    with pytest.raises(ConfigError, match=re.escape("does not belong to tls.certificate")):
        load_credentials(TlsConfig(certs.server_cert, certs.client_key))


def test_an_encrypted_key_is_refused_with_what_to_do(tmp_path: Path, certs: CertFiles) -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(certs.server_key.read_bytes(), password=None)
    locked = tmp_path / "locked.key"
    locked.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(ConfigError, match=re.escape("is encrypted: give an unencrypted PEM key")):
        load_credentials(TlsConfig(certs.server_cert, locked))


def test_good_files_load_with_the_chain_and_the_cas(certs: CertFiles) -> None:
    creds = load_credentials(TlsConfig(certs.server_cert, certs.server_key, certs.ca))
    assert len(creds.chain) == 1 and creds.key is not None
    assert creds.authorities is not None and len(creds.authorities) == 1
    client_only = load_credentials(TlsConfig(ca_certificates=certs.ca))
    assert client_only.chain == () and client_only.key is None


# -- options ------------------------------------------------------------------------------------


def test_server_options_need_a_certificate(certs: CertFiles) -> None:
    with pytest.raises(ConfigError, match=re.escape("a TLS listener needs tls.certificate")):
        server_options(TlsConfig(ca_certificates=certs.ca))


def test_server_options_refuse_anything_older_than_tls_1_2(certs: CertFiles) -> None:
    options = server_options(TlsConfig(certs.server_cert, certs.server_key))
    assert IOpenSSLServerConnectionCreator.providedBy(options)
    bits = _context_options(options)
    assert bits & SSL.OP_NO_TLSv1 and bits & SSL.OP_NO_TLSv1_1
    assert not bits & SSL.OP_NO_TLSv1_2


def test_server_options_verify_clients_only_when_asked(certs: CertFiles) -> None:
    plain: Any = server_options(TlsConfig(certs.server_cert, certs.server_key, certs.ca))
    assert plain.getContext().get_verify_mode() == SSL.VERIFY_NONE
    mutual: Any = server_options(
        TlsConfig(certs.server_cert, certs.server_key, certs.ca, require_client_certificate=True)
    )
    mode = mutual.getContext().get_verify_mode()
    assert mode & SSL.VERIFY_PEER and mode & SSL.VERIFY_FAIL_IF_NO_PEER_CERT


def test_client_options_are_a_client_connection_creator(certs: CertFiles) -> None:
    for hostname in ("127.0.0.1", "localhost", "[::1]"):
        creator = client_options(TlsConfig(ca_certificates=certs.ca), hostname)
        assert IOpenSSLClientConnectionCreator.providedBy(creator)


def test_unverified_client_options_warn_once(
    certs: CertFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tls_module, "_warned_unverified", [False])
    seen: list[str] = []

    def observer(event: LogEvent) -> None:
        text = formatEvent(event)
        if "NOT verified" in text:
            seen.append(text)

    globalLogPublisher.addObserver(observer)
    try:
        config = TlsConfig(verify=False)
        first = client_options(config, "127.0.0.1")
        client_options(config, "localhost")
    finally:
        globalLogPublisher.removeObserver(observer)
    assert IOpenSSLClientConnectionCreator.providedBy(first)
    assert len(seen) == 1 and "127.0.0.1" in seen[0]


# -- failure descriptions ----------------------------------------------------------------------


def test_openssl_errors_are_described_by_their_reasons() -> None:
    error = SSL.Error([("SSL routines", "", "tlsv1 alert unknown ca")])
    assert describe_tls_failure(error) == "tlsv1 alert unknown ca"


def test_a_verify_failure_says_why_when_the_chain_is_known(certs: CertFiles) -> None:
    from cryptography import x509
    from OpenSSL.crypto import X509

    self_signed = X509.from_cryptography(
        x509.load_pem_x509_certificate(certs.self_signed_cert.read_bytes())
    )

    class Handle:
        def get_peer_cert_chain(self) -> list[X509]:
            return [self_signed]

    error = SSL.Error([("SSL routines", "", "certificate verify failed")])
    creds = load_credentials(TlsConfig(ca_certificates=certs.ca))
    text = describe_tls_failure(error, Handle(), creds)
    assert text.startswith("certificate verify failed (") and "self" in text


def test_a_name_mismatch_names_what_was_expected() -> None:
    error = VerificationError(errors=[IPAddressMismatch(mismatched_id=IPAddress_ID("127.0.0.1"))])
    assert "not 127.0.0.1" in describe_tls_failure(error)
