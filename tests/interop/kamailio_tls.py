"""Kamailio as a registrar and proxy over TLS, for tests/interop/test_kamailio_tls.py.

:func:`start_kamailio_tls` runs tests/interop/kamailio/kamailio-tls.cfg (the
registrar/proxy of kamailio.cfg, SIP over TLS only) with a ``tls.cfg`` for
Kamailio's tls module written into the test's folder: the server
certificate and key that :func:`tests.certs.make_certs` made (for
127.0.0.1), TLS 1.2 or newer, client certificates neither asked for nor
checked. The sipdump module writes every SIP message Kamailio receives and
sends into the same folder, and :meth:`KamailioTls.report` appends that
trace to the log, so a failure shows what crossed the wire inside TLS.

The process is stopped by its PID like every harness program; the
``interop`` fixture does it after the test (:func:`kamailio_tls`).
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.certs import CertFiles
from tests.interop.harness import (
    HERE,
    KAMAILIO,
    LOG_TAIL,
    Interop,
    Kamailio,
    ManagedProcess,
    free_tcp_port,
    free_udp_port,
    kamailio_users,
    require_program,
    settle,
)

__all__ = [
    "KAMAILIO_TLS_CFG",
    "KamailioTls",
    "TracedMessage",
    "kamailio_tls",
    "parse_sipdump",
    "start_kamailio_tls",
    "tls_cfg",
]

KAMAILIO_TLS_CFG = HERE / "kamailio" / "kamailio-tls.cfg"


def tls_cfg(certificate: Path, private_key: Path, ca: Path) -> str:
    """The tls module's configuration: one server profile and one client profile.

    ``verify_certificate = no`` and ``require_certificate = no`` on the
    server side: the UAs authenticate with digest, not with a client
    certificate. The client profile (used only if Kamailio opens a
    connection itself, which the aliasing in kamailio-tls.cfg avoids) would
    verify the UA against the test CA.
    """
    return (
        "[server:default]\n"
        "method = TLSv1.2+\n"
        "verify_certificate = no\n"
        "require_certificate = no\n"
        f"certificate = {certificate}\n"
        f"private_key = {private_key}\n"
        f"ca_list = {ca}\n"
        "\n"
        "[client:default]\n"
        "method = TLSv1.2+\n"
        "verify_certificate = yes\n"
        "require_certificate = yes\n"
        f"ca_list = {ca}\n"
    )


@dataclass(frozen=True, slots=True)
class TracedMessage:
    """One SIP message as Kamailio's sipdump module wrote it down."""

    #: "rcv" (Kamailio received it) or "snd" (Kamailio sent it).
    tag: str
    #: "tls", "tcp", "udp"...
    proto: str
    src: tuple[str, int]
    dst: tuple[str, int]
    text: str

    @property
    def first_line(self) -> str:
        return self.text.split("\r\n", 1)[0].split("\n", 1)[0].strip()

    @property
    def method(self) -> str:
        """The request's method, or the CSeq method of a response."""
        if not self.first_line.startswith("SIP/2.0 "):
            return self.first_line.split(" ", 1)[0]
        cseq = self.header("CSeq") or ""
        return cseq.split()[-1] if cseq.split() else ""

    @property
    def status(self) -> int | None:
        """The status code of a response; None for a request."""
        if self.first_line.startswith("SIP/2.0 "):
            return int(self.first_line.split()[1])
        return None

    def headers(self, name: str) -> list[str]:
        """The values of every header line called ``name`` (case-insensitive)."""
        head = re.split(r"\r?\n\r?\n", self.text, maxsplit=1)[0]
        found = re.findall(rf"^{re.escape(name)}[ \t]*:[ \t]*(.*?)\r?$", head, re.I | re.M)
        return [value.strip() for value in found]

    def header(self, name: str) -> str | None:
        values = self.headers(name)
        return values[0] if values else None


def _endpoint(fields: dict[str, str], side: str) -> tuple[str, int]:
    return fields.get(f"{side}ip", ""), int(fields.get(f"{side}port", "0") or 0)


def parse_sipdump(text: str) -> list[TracedMessage]:
    """The messages in sipdump's text format, oldest first.

    Each entry is a ``====================`` line, ``key: value`` lines (tag,
    proto, srcip, srcport, dstip, dstport...), a ``~~~~~~~~~~~~~~~~~~~~``
    line, the SIP message, and a ``||||||||||||||||||||`` line.
    """
    messages = []
    pattern = r"^={20}\n(.*?)^~{20}\n(.*?)^\|{20}$"
    for meta, body in re.findall(pattern, text, re.S | re.M):
        fields = dict(re.findall(r"^(\w+): (.*)$", meta, re.M))
        messages.append(
            TracedMessage(
                tag=fields.get("tag", ""),
                proto=fields.get("proto", "").split()[0] if fields.get("proto") else "",
                src=_endpoint(fields, "src"),
                dst=_endpoint(fields, "dst"),
                text=body,
            )
        )
    return messages


@dataclass(eq=False)
class KamailioTls(Kamailio):
    """A running Kamailio whose SIP socket is TLS on ``127.0.0.1:port``."""

    #: Where sipdump writes the SIP messages (text files, one per start).
    sipdump_dir: Path | None = None

    @property
    def socket_name(self) -> str:
        """How ``ul.dump`` names the listening socket a binding arrived on."""
        return f"tls:127.0.0.1:{self.port}"

    def sip_trace(self) -> str:
        """Every SIP message Kamailio received and sent so far (sipdump's files)."""
        if self.sipdump_dir is None:
            return ""
        parts = [p.read_text(errors="replace") for p in sorted(self.sipdump_dir.glob("sipdump-*"))]
        return "".join(parts)

    def messages(self) -> list[TracedMessage]:
        """:meth:`sip_trace`, parsed."""
        return parse_sipdump(self.sip_trace())

    async def wait_messages(
        self,
        count: int,
        timeout: float = 5.0,
        where: Callable[[TracedMessage], bool] | None = None,
        **match: object,
    ) -> list[TracedMessage]:
        """Poll the trace until ``count`` messages match; fail the test after ``timeout``.

        ``match`` holds attribute values (``tag="snd"``, ``method="INVITE"``,
        ``status=None``...), ``where`` any further test. sipdump writes its
        files from a timer, so a message shows up a little after Kamailio
        handled it.
        """
        waited = 0.0
        while True:
            found = [
                m for m in self.messages() if _matches(m, match) and (where is None or where(m))
            ]
            if len(found) >= count:
                return found
            if waited >= timeout:
                pytest.fail(
                    f"kamailio's trace holds {len(found)} message(s) like {match} after "
                    f"{timeout}s, wanted {count}\n{self.report()}"
                )
            await settle(0.05)
            waited += 0.05

    def report(self) -> str:
        trace = self.sip_trace()[-LOG_TAIL:]
        return f"{self.process.report()}\n--- kamailio sipdump (last {LOG_TAIL} chars)\n{trace}"


def _matches(message: TracedMessage, match: dict[str, object]) -> bool:
    return all(getattr(message, name) == value for name, value in match.items())


def start_kamailio_tls(
    workdir: Path,
    certs: CertFiles,
    *,
    certificate: Path | None = None,
    private_key: Path | None = None,
    realm: str = "sipd.test",
) -> KamailioTls:
    """Start Kamailio with kamailio-tls.cfg on a free TLS port of 127.0.0.1.

    It serves ``certs.server_cert`` (for 127.0.0.1) unless ``certificate``
    and ``private_key`` name another pair, such as ``certs.wrong_name_cert``.
    Call :meth:`KamailioTls.wait_ready` before using it.
    """
    require_program(KAMAILIO)
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "tls.cfg"
    config.write_text(
        tls_cfg(certificate or certs.server_cert, private_key or certs.server_key, certs.ca)
    )
    sipdump = workdir / "sipdump"
    sipdump.mkdir()
    port, rpc_port = free_tcp_port(), free_udp_port()
    runtime_dir = Path(tempfile.mkdtemp(prefix="sipd-kamtls-"))
    ctl_socket = f"unix:{runtime_dir}/ctl.sock"
    args = [
        KAMAILIO,
        "-f",
        str(KAMAILIO_TLS_CFG),
        "-DD",
        "-E",
        "-l",
        f"tls:127.0.0.1:{port}",
        "-A",
        f'TLS_CFG="{config}"',
        "-A",
        f'RPC_SOCKET="udp:127.0.0.1:{rpc_port}"',
        "-A",
        f'CTL_SOCKET="{ctl_socket}"',
        "-A",
        f'SIPDUMP_DIR="{sipdump}"',
        "-A",
        f'REALM="{realm}"',
        "-Y",
        str(runtime_dir),
        "-P",
        str(runtime_dir / "kamailio.pid"),
        "-w",
        str(workdir),
        "-m",
        "32",
        "-M",
        "8",
    ]
    process = ManagedProcess.spawn("kamailio-tls", args, workdir / "kamailio.log", cwd=workdir)
    process.port = port
    return KamailioTls(
        process,
        port,
        rpc_port,
        ctl_socket,
        runtime_dir,
        realm,
        kamailio_users(),
        sipdump_dir=sipdump,
    )


async def kamailio_tls(
    interop: Interop,
    certs: CertFiles,
    *,
    certificate: Path | None = None,
    private_key: Path | None = None,
) -> KamailioTls:
    """A ready TLS Kamailio (see :func:`start_kamailio_tls`) that ``interop`` stops by PID."""
    workdir = interop.tmp_path / f"{len(interop.processes)}-kamailio-tls"
    k = start_kamailio_tls(workdir, certs, certificate=certificate, private_key=private_key)
    interop.processes.append(k.process)
    interop.kamailios.append(k)
    await k.wait_ready()
    return k
