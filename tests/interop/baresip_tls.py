"""baresip over SIP/TLS, with or without SRTP, for the interop tests.

baresip 1.0.0 (Debian's baresip-core) takes its TLS material from two
config lines: ``sip_certificate`` (one PEM file holding the certificate
*and* its private key: libre loads both from it) and ``sip_cafile``. It
listens for TLS on the ``sip_listen`` port + 1. This version has no
``sip_verify_server`` setting: libre 1.1.0 accepts any server certificate,
so only sipd's side of the handshake is verified here (sipd checks
baresip's certificate against the test CA, ``verify=True``).

SRTP is the ``srtp.so`` module and an account parameter: ``mediaenc=srtp``
(best effort: RTP/AVP with a=crypto) or ``mediaenc=srtp-mand`` (RTP/SAVP,
SRTP or no call). baresip 1.0.0 offers a single
``a=crypto:1 AES_CM_128_HMAC_SHA1_80`` line.

Both sides use the server certificate :func:`tests.certs.make_certs`
writes for 127.0.0.1 (signed by the test CA): baresip as a TLS server when
sipd calls it, sipd as one when baresip calls, and each as a client
certificate the other may ask for.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

from sipd import TlsConfig
from tests.certs import CertFiles, make_certs
from tests.interop.harness import Baresip, Interop, start_baresip

__all__ = [
    "TlsFiles",
    "baresip_sdp",
    "make_tls_files",
    "sipd_tls_config",
    "start_tls_baresip",
]


@dataclass(frozen=True)
class TlsFiles:
    """The test PKI plus the combined PEM baresip wants."""

    certs: CertFiles
    #: Server certificate followed by its private key, for ``sip_certificate``.
    baresip_pem: Path


def make_tls_files(directory: Path) -> TlsFiles:
    """A CA and a 127.0.0.1 certificate (see tests/certs.py), and baresip's PEM."""
    directory.mkdir(parents=True, exist_ok=True)
    certs = make_certs(directory)
    pem = directory / "baresip-cert-and-key.pem"
    pem.write_bytes(certs.server_cert.read_bytes() + certs.server_key.read_bytes())
    pem.chmod(0o600)
    return TlsFiles(certs, pem)


def sipd_tls_config(files: TlsFiles) -> TlsConfig:
    """sipd's side: serve with the 127.0.0.1 certificate, verify peers against the CA."""
    return TlsConfig(
        certificate=str(files.certs.server_cert),
        private_key=str(files.certs.server_key),
        ca_certificates=str(files.certs.ca),
        verify=True,
    )


async def start_tls_baresip(
    interop: Interop,
    user: str,
    *,
    tone: Path,
    files: TlsFiles,
    mediaenc: str | None = None,
) -> Baresip:
    """A ready baresip whose account is ``sip:user@127.0.0.1:<tls port>;transport=tls``.

    ``mediaenc`` ("srtp", "srtp-mand") turns SRTP on; None leaves plain RTP.
    Its SIP trace (every message with its SDP) goes into its log. The
    interop fixture stops it by PID after the test.
    """
    workdir = interop.tmp_path / f"{len(interop.processes)}-baresip-tls-{user}"
    workdir.mkdir(parents=True)
    baresip = start_baresip(
        workdir,
        tone=tone,
        user=user,
        transport="tls",
        account_params="" if mediaenc is None else f";mediaenc={mediaenc}",
        extra_modules=() if mediaenc is None else ("srtp.so",),
        extra_config={
            "sip_certificate": str(files.baresip_pem),
            "sip_cafile": str(files.certs.ca),
        },
        sip_trace=True,
    )
    interop.processes.append(baresip.process)
    interop.baresips.append(baresip)
    await baresip.wait_ready()
    return baresip


#: A traced SIP message in baresip's log: "<direction> ... \n<start line>" up to the next one.
_TRACE = re.compile(r"^(?:SIP/2\.0 \d{3}[^\n]*|[A-Z]+ \S+ SIP/2\.0)$", re.MULTILINE)


def baresip_sdp(baresip: Baresip) -> list[str]:
    """The SDP bodies (m= and a=crypto lines, keys masked) in baresip's SIP trace.

    For failure messages: shows what was offered and answered without
    printing keys.
    """
    text = baresip.process.log_text(None)
    starts = [m.start() for m in _TRACE.finditer(text)] + [len(text)]
    found = []
    for begin, end in itertools.pairwise(starts):
        message = text[begin:end]
        lines = [
            re.sub(r"inline:\S+", "inline:<key>", line.strip())
            for line in message.splitlines()
            if line.startswith(("m=", "a=crypto", "c="))
        ]
        if lines:
            found.append(message.splitlines()[0] + ": " + " | ".join(lines))
    return found
