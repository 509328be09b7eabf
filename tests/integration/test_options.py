"""Requests outside any call, over real UDP on 127.0.0.1 (RFC 3261 §11, §8.2.1, §15.1.2).

A real :class:`~sipd.SimplePeer` on a free port is probed by a plain Twisted
``DatagramProtocol`` that writes each request out by hand, so the wire
format is checked independently of sipd's own serialiser.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol

from sipd import SimplePeer
from sipd.sip.message import Response, parse_message

ALLOWED = {"INVITE", "ACK", "CANCEL", "BYE", "OPTIONS"}


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


class ProbeClient(DatagramProtocol):
    """Sends hand-written requests and collects the responses that come back."""

    def __init__(self) -> None:
        self.responses: list[Response] = []
        self._waiters: list[tuple[str, defer.Deferred[Response]]] = []

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        message = parse_message(data)
        assert isinstance(message, Response), data
        self.responses.append(message)
        if message.status < 200:
            return
        branch = message.top_via.branch
        for entry in list(self._waiters):
            if entry[0] == branch:
                self._waiters.remove(entry)
                entry[1].callback(message)

    @property
    def port(self) -> int:
        assert self.transport is not None
        port: int = self.transport.getHost().port
        return port

    def build(
        self,
        method: str,
        target_port: int,
        *,
        branch: str,
        to_tag: str | None = None,
        max_forwards: int = 70,
    ) -> bytes:
        to = "<sip:bob@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
        lines = [
            f"{method} sip:bob@127.0.0.1:{target_port} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch};rport",
            f"Max-Forwards: {max_forwards}",
            f"To: {to}",
            f"From: <sip:probe@127.0.0.1:{self.port}>;tag=probe1",
            f"Call-ID: {secrets.token_hex(8)}@127.0.0.1",
            f"CSeq: 1 {method}",
            f"Contact: <sip:probe@127.0.0.1:{self.port}>",
            "Accept: application/sdp",
            "Content-Length: 0",
            "",
            "",
        ]
        return "\r\n".join(lines).encode()

    def request(
        self, method: str, target_port: int, *, timeout: float = 5.0, **kw: Any
    ) -> defer.Deferred[Response]:
        """Send ``method`` to the peer; fires with the final response."""
        branch = "z9hG4bK" + secrets.token_hex(8)
        d: defer.Deferred[Response] = defer.Deferred()
        self._waiters.append((branch, d))
        assert self.transport is not None
        self.transport.write(
            self.build(method, target_port, branch=branch, **kw),
            (
                "127.0.0.1",
                target_port,
            ),
        )
        return d.addTimeout(timeout, _reactor())


@pytest_twisted.async_yield_fixture
async def bob() -> AsyncIterator[SimplePeer]:
    peer = await SimplePeer.create("bob", 0)
    try:
        yield peer
    finally:
        await peer.close()


@pytest_twisted.async_yield_fixture
async def probe() -> AsyncIterator[ProbeClient]:
    client = ProbeClient()
    port = _reactor().listenUDP(0, client, "127.0.0.1")
    try:
        yield client
    finally:
        await defer.maybeDeferred(port.stopListening)


def _tokens(response: Response, name: str) -> set[str]:
    values = response.headers.get_all(name)
    return {t.strip().upper() for v in values for t in v.split(",") if t.strip()}


@pytest_twisted.ensureDeferred
async def test_options_outside_a_dialog_gets_200_with_capabilities(
    bob: SimplePeer, probe: ProbeClient
) -> None:
    """OPTIONS gets 200 carrying Allow, Accept and Supported (§11.2)."""
    response = await probe.request("OPTIONS", bob.port)
    assert response.status == 200
    assert _tokens(response, "Allow") >= ALLOWED
    assert "APPLICATION/SDP" in _tokens(response, "Accept")
    assert "Supported" in response.headers
    assert response.to.tag  # §8.2.6.2: a final response carries a To tag
    assert response.cseq.method == "OPTIONS"
    via = response.top_via
    assert via.received == "127.0.0.1" and via.rport == probe.port  # RFC 3581


@pytest_twisted.ensureDeferred
async def test_options_with_max_forwards_zero_is_still_answered(
    bob: SimplePeer, probe: ProbeClient
) -> None:
    """§8.2.2.2 leaves OPTIONS with Max-Forwards 0 to the UAS: it answers 200, not 483."""
    response = await probe.request("OPTIONS", bob.port, max_forwards=0)
    assert response.status == 200


@pytest_twisted.ensureDeferred
async def test_unknown_method_gets_501(bob: SimplePeer, probe: ProbeClient) -> None:
    """A method the UA does not know at all gets 501 Not Implemented (§8.2.1)."""
    response = await probe.request("FOO", bob.port)
    assert response.status == 501
    assert response.cseq.method == "FOO"


@pytest.mark.parametrize("method", ["SUBSCRIBE", "REGISTER", "MESSAGE"])
@pytest_twisted.ensureDeferred
async def test_known_but_unsupported_method_gets_405_with_allow(
    bob: SimplePeer, probe: ProbeClient, method: str
) -> None:
    """A known method the UA does not support gets 405 listing Allow (§8.2.1)."""
    response = await probe.request(method, bob.port)
    assert response.status == 405
    allow = _tokens(response, "Allow")
    assert allow >= ALLOWED
    assert method not in allow


@pytest_twisted.ensureDeferred
async def test_bye_for_no_dialog_gets_481(bob: SimplePeer, probe: ProbeClient) -> None:
    """A BYE matching no dialog gets 481 Call/Transaction Does Not Exist (§15.1.2)."""
    response = await probe.request("BYE", bob.port, to_tag="nosuchdialog")
    assert response.status == 481
    assert response.cseq.method == "BYE"
    assert bob.active_calls() == []
