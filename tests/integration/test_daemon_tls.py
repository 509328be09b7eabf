"""The daemon (a real ``twistd sipd`` process) over TLS, and with ``media.srtp: required``.

The config lists ``sip.transports: [udp, tls]`` with a certificate from the
test's own CA (``tests/certs.py``); a SimplePeer that trusts only that CA
calls the echo handler over TLS, hears its audio back and hangs up, and the
daemon's metrics show that the dialog's requests came over TLS and none
over UDP; a UDP caller is still served on the same port number. With
``media.srtp: required`` a caller offering plain RTP is refused with 488
and one offering SDES keys is answered.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import yaml

from sipd import CallRejected, CallState, SimplePeer, TlsConfig
from sipd.media.tones import ToneGenerator
from tests.certs import CertFiles, make_certs
from tests.conftest import PeerFactory, eventually, within
from tests.integration.test_daemon import (
    Daemon,
    http_get,
    parse_prometheus,
    start_daemon,
    write_config,
)


@pytest.fixture
def certs(tmp_path: Path) -> CertFiles:
    folder = tmp_path / "pki"
    folder.mkdir()
    return make_certs(folder)


def daemon_config(tmp_path: Path, **sections: dict[str, Any]) -> Path:
    """The test daemon config (free ports, echo) with ``sections`` merged into it."""
    path = tmp_path / "sipd.yaml"
    doc = write_config(path)
    for name, values in sections.items():
        doc[name] = {**doc.get(name, {}), **values}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


async def metrics_of(daemon: Daemon) -> dict[str, float]:
    assert daemon.http_port is not None
    code, body = await within(http_get(daemon.http_port, "/metrics"), 5)
    assert code == 200, body
    return parse_prometheus(body.decode())


async def echoed_call(peer: SimplePeer, daemon: Daemon) -> str:
    """Call the echo daemon, hear the tone back, hang up; return the Call-ID."""
    call = await within(peer.call(daemon.sip_uri), 5)
    await within(call.wait_for_answer(), 5)
    tone = ToneGenerator(700.0)
    for _ in range(15):
        await within(call.send_audio(tone.next_frame()), 2)
    heard = await eventually(lambda: call.stats()["packets_received"] >= 5, 5)
    assert heard, f"no echo came back: {call.stats()}\n{daemon.report()}"
    await within(call.hangup(), 5)
    assert call.state is CallState.TERMINATED and call.failure is None, call.failure
    cdr = rf"CDR call_id={re.escape(str(call.sip_call_id))} .*outcome=completed status=200"
    await daemon.until_log(cdr)
    return str(call.sip_call_id)


@pytest_twisted.ensureDeferred
async def test_a_tls_caller_is_answered_by_the_daemon_over_tls(
    tmp_path: Path, certs: CertFiles, peers: PeerFactory
) -> None:
    config = daemon_config(
        tmp_path,
        sip={"transports": ["udp", "tls"]},
        # Relative to the config file's folder.
        tls={"certificate": "pki/server.crt", "private_key": "pki/server.key"},
    )
    daemon = start_daemon(tmp_path, config)
    try:
        await daemon.until_ready()
        assert re.search(r"listening on 127\.0\.0\.1:\d+ \(udp, tls\)", daemon.log()), (
            daemon.report()
        )
        alice = await peers("alice", transport="tls", tls=TlsConfig(ca_certificates=str(certs.ca)))
        await echoed_call(alice, daemon)
        # Alice sent nothing over UDP: INVITE, ACK and BYE rode her TLS connection.
        assert alice.coordinator.metrics.get("sipd_sip_requests_sent_total") == 0

        metrics = await metrics_of(daemon)
        for method in ("INVITE", "ACK", "BYE"):
            over_tls = f'sipd_sip_requests_received_total{{method="{method}",transport="tls"}}'
            assert metrics.get(over_tls) == 1, (method, metrics)
            over_udp = f'sipd_sip_requests_received_total{{method="{method}"}}'
            assert over_udp not in metrics, (method, metrics)
        opened = 'sipd_sip_connections_opened_total{direction="in",transport="tls"}'
        assert metrics.get(opened) == 1, metrics
        assert metrics['sipd_calls_total{direction="incoming",outcome="completed"}'] == 1
        status = daemon.status()
        assert status["transports"] == ["udp", "tls"], status
    finally:
        code = await daemon.stop()
    assert code == 0, daemon.report()


@pytest_twisted.ensureDeferred
async def test_a_udp_caller_is_still_served_when_tls_is_listed(
    tmp_path: Path, certs: CertFiles, peers: PeerFactory
) -> None:
    """``[udp, tls]`` serves both: a plain UDP caller's call completes as before."""
    config = daemon_config(
        tmp_path,
        sip={"transports": ["udp", "tls"]},
        tls={"certificate": str(certs.server_cert), "private_key": str(certs.server_key)},
    )
    daemon = start_daemon(tmp_path, config)
    try:
        await daemon.until_ready()
        bob = await peers("bob")
        await echoed_call(bob, daemon)
        metrics = await metrics_of(daemon)
        assert metrics.get('sipd_sip_requests_received_total{method="INVITE"}') == 1, metrics
        assert 'sipd_sip_requests_received_total{method="INVITE",transport="tls"}' not in metrics
    finally:
        code = await daemon.stop()
    assert code == 0, daemon.report()


@pytest_twisted.ensureDeferred
async def test_srtp_required_refuses_plain_rtp_with_488_and_answers_srtp(
    tmp_path: Path, peers: PeerFactory
) -> None:
    config = daemon_config(tmp_path, media={"srtp": "required"})
    daemon = start_daemon(tmp_path, config)
    try:
        await daemon.until_ready()
        plain = await peers("plain", srtp="off")
        call = await within(plain.call(daemon.sip_uri), 5)
        with pytest.raises(CallRejected) as info:
            await within(call.wait_for_answer(), 5)
        assert info.value.status == 488, f"{info.value}\n{daemon.report()}"
        assert call.state is CallState.FAILED

        # The same daemon answers a caller that offers SDES keys, and echoes over SRTP.
        secure = await peers("secure", srtp="required")
        await echoed_call(secure, daemon)
    finally:
        code = await daemon.stop()
    assert code == 0, daemon.report()
