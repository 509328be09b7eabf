"""Tests of the client registration (``sipd/session/registration.py``).

A real :class:`UnifiedCoordinator` runs on :class:`FakeUdpReactor` (a
``task.Clock`` whose UDP port records what is written). The test plays the
registrar: it reads each REGISTER off the fake wire and writes the answer
back into the protocol, so timing (refresh, back-off, Timer F) is driven by
``clock.advance`` and checked to the second.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from typing import TypeVar

import pytest
from twisted.internet import defer
from twisted.python.failure import Failure

from sipd.config import SipdConfig
from sipd.errors import AuthenticationError, RegistrationError
from sipd.session.coordinator import UnifiedCoordinator
from sipd.session.registration import Registration, RegistrationState
from sipd.sip.message import Request, parse_message
from tests.unit.test_transport_udp import FakeUdpReactor

REGISTRAR = ("127.0.0.1", 5070)
REGISTRAR_URI = "sip:127.0.0.1:5070"
OUR_CONTACT = "sip:alice@127.0.0.1:5062"
T = TypeVar("T")


class Client:
    """A UA on a fake socket whose REGISTERs the test answers by hand."""

    def __init__(self, **settings: object) -> None:
        self.reactor = FakeUdpReactor()
        options: dict[str, object] = {"name": "alice", "host": "127.0.0.1", "port": 5062}
        options.update(settings)
        self.coordinator = UnifiedCoordinator(
            SipdConfig(**options),  # type: ignore[arg-type]
            reactor=self.reactor,
        )
        self.coordinator.start()
        self.wire = self.reactor.ports[0]
        self._read = 0

    def register(self, **kw: object) -> defer.Deferred[Registration]:
        return self.coordinator.register(REGISTRAR_URI, **kw)  # type: ignore[arg-type]

    @property
    def registration(self) -> Registration:
        (registration,) = self.coordinator.registrations
        return registration

    def sent(self) -> list[Request]:
        """Every REGISTER put on the wire, retransmissions included."""
        out = []
        for data, dest in self.wire.sent:
            message = parse_message(data)
            if isinstance(message, Request) and message.method == "REGISTER":
                assert dest == REGISTRAR
                out.append(message)
        return out

    def attempts(self) -> list[Request]:
        """Distinct REGISTERs (one per CSeq): retransmissions left out."""
        seen: dict[int, Request] = {}
        for request in self.sent():
            seen.setdefault(request.cseq.number, request)
        return list(seen.values())

    def fresh(self) -> list[Request]:
        """Distinct REGISTERs sent since the last call."""
        attempts = self.attempts()
        new, self._read = attempts[self._read :], len(attempts)
        return new

    def last(self) -> Request:
        (request,) = self.fresh()
        return request

    def reply(self, request: Request, status: int, reason: str, *headers: str) -> None:
        """Answer ``request`` as the registrar would (from the registrar's address)."""
        h = request.headers
        lines = [
            f"SIP/2.0 {status} {reason}",
            *(f"Via: {v}" for v in h.get_all("Via")),
            f"From: {h.get('From')}",
            f"To: {h.get('To')};tag=registrar1",
            f"Call-ID: {request.call_id}",
            f"CSeq: {request.cseq.number} REGISTER",
            *headers,
            "Content-Length: 0",
            "",
            "",
        ]
        self.coordinator.transport.datagramReceived("\r\n".join(lines).encode(), REGISTRAR)

    def ok(self, request: Request, *headers: str) -> None:
        self.reply(request, 200, "OK", *headers)

    def close(self) -> None:
        d = self.coordinator.close()
        for _ in range(50):
            if not self.reactor.getDelayedCalls():
                break
            self.reactor.advance(10)
        assert d.called
        assert self.reactor.getDelayedCalls() == []


def result_of(d: defer.Deferred[T]) -> T:
    """The result a Deferred already has (it must have fired successfully)."""
    box: list[T] = []
    failed: list[Failure] = []
    d.addCallbacks(box.append, failed.append)
    assert not failed, failed[0].getTraceback()
    assert box, "the Deferred has not fired"
    return box[0]


def failure_of(d: defer.Deferred[object]) -> Failure:
    """The Failure a Deferred already has (it must have failed)."""
    box: list[Failure] = []
    d.addCallbacks(lambda r: pytest.fail(f"the Deferred succeeded with {r!r}"), box.append)
    assert box, "the Deferred has not fired"
    return box[0]


@pytest.fixture
def client() -> Iterator[Client]:
    c = Client()
    yield c
    c.close()


def test_register_carries_our_contact_and_fires_on_200(client: Client) -> None:
    """The REGISTER names our AOR and contact; its Deferred fires with the Registration on 200."""
    d = client.register(username="alice", expires=600)
    request = client.last()
    assert str(request.uri) == REGISTRAR_URI
    assert str(request.to.uri) == "sip:alice@127.0.0.1"
    assert str(request.from_.uri) == "sip:alice@127.0.0.1"
    assert [str(c.uri) for c in request.contacts] == [OUR_CONTACT]
    assert request.headers.get("Expires") == "600"
    assert request.top_via.rport is True
    assert not d.called
    client.ok(request, f"Contact: <{OUR_CONTACT}>;expires=600")
    registration = result_of(d)
    assert registration.state is RegistrationState.REGISTERED
    assert registration.granted_expires == 600


def test_refresh_follows_a_granted_expires_header(client: Client) -> None:
    """Asked 3600, granted Expires: 100: the refresh goes at 80 s, same Call-ID, next CSeq."""
    d = client.register(expires=3600)
    first = client.last()
    client.ok(first, "Expires: 100")
    assert result_of(d).granted_expires == 100
    client.reactor.advance(79.9)
    assert client.fresh() == []
    client.reactor.advance(0.2)
    refresh = client.last()
    assert refresh.call_id == first.call_id
    assert refresh.cseq.number == first.cseq.number + 1
    assert refresh.from_.tag == first.from_.tag
    assert refresh.headers.get("Expires") == "3600"


def test_refresh_follows_our_contacts_expires_parameter(client: Client) -> None:
    """Our Contact's ;expires=30 wins over Expires: 3600 and another device's ;expires=5."""
    d = client.register(expires=3600)
    client.ok(
        client.last(),
        "Contact: <sip:alice@127.0.0.1:6000>;expires=5",
        f"Contact: <{OUR_CONTACT}>;expires=30",
        "Expires: 3600",
    )
    assert result_of(d).granted_expires == 30
    # 80 % of 30 s is 24 s; 5 s before expiry would be 25 s: the earlier wins.
    client.reactor.advance(23.9)
    assert client.fresh() == []
    client.reactor.advance(0.2)
    client.ok(client.last(), f"Contact: <{OUR_CONTACT}>;expires=30")
    client.reactor.advance(24.1)
    assert len(client.fresh()) == 1
    assert client.registration.registrations == 2


def test_interval_too_brief_is_retried_with_min_expires(client: Client) -> None:
    """423 with Min-Expires: 1800 makes the next REGISTER (and the refreshes) ask for 1800."""
    d = client.register(expires=60)
    client.reply(client.last(), 423, "Interval Too Brief", "Min-Expires: 1800")
    retry = client.last()
    assert retry.headers.get("Expires") == "1800"
    client.ok(retry, "Expires: 1800")
    assert result_of(d).granted_expires == 1800
    client.reactor.advance(1440.1)
    assert client.last().headers.get("Expires") == "1800"


def test_unreachable_registrar_fails_the_first_deferred_then_backs_off(client: Client) -> None:
    """No answer: RegistrationError after Timer F, then retries 2, 4, 8 ... s apart, up to 300."""
    d = client.register(expires=600)
    first = client.last()
    client.reactor.advance(31.9)  # Timer F is 64 * T1 = 32 s
    assert not d.called
    assert len(client.sent()) > 1  # retransmissions of the same REGISTER
    assert client.fresh() == []
    client.reactor.advance(0.2)
    failure = failure_of(d)
    assert failure.check(RegistrationError)
    assert "127.0.0.1:5070" in str(failure.value)
    assert client.registration.state is RegistrationState.RETRYING
    # From now on every attempt is answered 503 at once, so the gaps are the back-off.
    gaps = []
    for _ in range(10):
        waited = 0.0
        while not client.attempts()[client._read :]:
            client.reactor.advance(0.5)
            waited += 0.5
        gaps.append(waited)
        client.reply(client.last(), 503, "Service Unavailable")
    assert gaps == [2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 300.0, 300.0]
    assert all(r.call_id == first.call_id for r in client.attempts())
    # A success resets the back-off: the next failure waits 2 s again.
    client.reactor.advance(300)
    client.ok(client.last(), "Expires: 600")
    assert client.registration.state is RegistrationState.REGISTERED
    client.reactor.advance(480)
    client.reply(client.last(), 500, "Server Internal Error")
    client.reactor.advance(1.9)
    assert client.fresh() == []
    client.reactor.advance(0.2)
    assert len(client.fresh()) == 1


def test_refused_registration_fails_without_retrying(client: Client) -> None:
    """403 fails the Deferred with RegistrationError(status=403) and schedules nothing."""
    d = client.register(expires=600)
    client.reply(client.last(), 403, "Forbidden")
    failure = failure_of(d)
    assert failure.check(RegistrationError)
    assert failure.value.status == 403
    assert client.registration.state is RegistrationState.FAILED
    client.reactor.advance(3600)
    assert client.fresh() == []


def test_stop_sends_expires_zero_and_leaves_no_timer(client: Client) -> None:
    """stop() sends REGISTER Expires: 0 in the same Call-ID; after its 200 no timer is left."""
    d = client.register(expires=600)
    first = client.last()
    client.ok(first, "Expires: 600")
    result_of(d)
    stopped = client.registration.stop()
    bye = client.last()
    assert bye.headers.get("Expires") == "0"
    assert bye.call_id == first.call_id
    assert bye.cseq.number > first.cseq.number
    assert [str(c.uri) for c in bye.contacts] == [OUR_CONTACT]
    assert not stopped.called
    client.ok(bye)
    result_of(stopped)
    assert client.registration.state is RegistrationState.STOPPED
    client.reactor.advance(5.1)  # Timer K (T4) of the last transaction
    assert client.reactor.getDelayedCalls() == []
    client.reactor.advance(3600)
    assert client.fresh() == []


def test_stop_before_the_first_answer_fails_the_start_and_ignores_late_answers(
    client: Client,
) -> None:
    """Stopped while the first REGISTER is pending: start fails; its late 200 binds nothing."""
    d = client.register(expires=600)
    first = client.last()
    stopped = client.registration.stop()
    failure_of(d).trap(RegistrationError)
    unregister = client.last()
    assert unregister.headers.get("Expires") == "0"
    client.ok(first, "Expires: 600")  # the late answer to the first REGISTER
    assert not stopped.called
    client.ok(unregister)
    result_of(stopped)
    client.reactor.advance(3600)
    assert client.fresh() == []
    assert client.registration.state is RegistrationState.STOPPED


def test_close_unregisters(client: Client) -> None:
    """Closing the coordinator sends the un-REGISTER of every registration."""
    d = client.register(expires=600)
    client.ok(client.last(), "Expires: 600")
    result_of(d)
    closed = client.coordinator.close()
    unregister = client.last()
    assert unregister.headers.get("Expires") == "0"
    client.ok(unregister)
    client.reactor.advance(0)
    assert closed.called


# -- digest -------------------------------------------------------------------------------
def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def _params(value: str) -> dict[str, str]:
    return {k.lower(): a or b for k, a, b in re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]+))', value)}


CHALLENGE = (
    'WWW-Authenticate: Digest realm="sipd.test", nonce="n0nce-1", algorithm=MD5, '
    'qop="auth", opaque="op4que"'
)


def _expected(params: dict[str, str], password: str) -> str:
    ha1 = _md5(f"{params['username']}:sipd.test:{password}")
    ha2 = _md5(f"REGISTER:{params['uri']}")
    return _md5(f"{ha1}:{params['nonce']}:{params['nc']}:{params['cnonce']}:{params['qop']}:{ha2}")


def test_challenge_is_answered_with_qop_auth_and_refresh_reuses_the_nonce(client: Client) -> None:
    """The 401 is answered per RFC 7616 (nc=1, a cnonce); the refresh pre-authorises with nc=2."""
    d = client.register(username="alice", password="s3cret", expires=100)
    first = client.last()
    assert first.headers.get("Authorization") is None
    client.reply(first, 401, "Unauthorized", CHALLENGE)
    second = client.last()
    assert second.cseq.number == first.cseq.number + 1
    assert second.top_via.branch != first.top_via.branch
    p = _params(second.headers.get("Authorization") or "")
    assert p["username"] == "alice" and p["realm"] == "sipd.test" and p["nonce"] == "n0nce-1"
    assert p["uri"] == REGISTRAR_URI and p["qop"] == "auth" and p["nc"] == "00000001"
    assert p["opaque"] == "op4que" and p["cnonce"]
    assert p["response"] == _expected(p, "s3cret")
    client.ok(second, "Expires: 100")
    result_of(d)
    client.reactor.advance(80.1)
    refresh = client.last()
    r = _params(refresh.headers.get("Authorization") or "")
    assert r["nonce"] == "n0nce-1" and r["nc"] == "00000002" and r["cnonce"] == p["cnonce"]
    assert r["response"] == _expected(r, "s3cret")


def test_stale_nonce_is_retried_without_failing(client: Client) -> None:
    """A refresh answered 401 stale=true is re-sent with the new nonce; the binding carries on."""
    d = client.register(username="alice", password="s3cret", expires=100)
    client.reply(client.last(), 401, "Unauthorized", CHALLENGE)
    client.ok(client.last(), "Expires: 100")
    result_of(d)
    client.reactor.advance(80.1)
    refresh = client.last()
    stale = CHALLENGE.replace("n0nce-1", "n0nce-2") + ", stale=TRUE"
    client.reply(refresh, 401, "Unauthorized", stale)
    retry = client.last()
    r = _params(retry.headers.get("Authorization") or "")
    assert r["nonce"] == "n0nce-2" and r["nc"] == "00000001"
    assert r["response"] == _expected(r, "s3cret")
    client.ok(retry, "Expires: 100")
    registration = client.registration
    assert registration.state is RegistrationState.REGISTERED
    assert registration.error is None and registration.registrations == 2


def test_wrong_credentials_fail_after_two_registers(client: Client) -> None:
    """A second 401 (not stale) to our answer ends with AuthenticationError: no loop."""
    d = client.register(username="alice", password="wrong", expires=100)
    client.reply(client.last(), 401, "Unauthorized", CHALLENGE)
    client.reply(client.last(), 401, "Unauthorized", CHALLENGE.replace("n0nce-1", "n0nce-3"))
    failure = failure_of(d)
    assert failure.check(AuthenticationError)
    assert "alice" in str(failure.value) and "password" in str(failure.value)
    assert len(client.attempts()) == 2
    assert client.registration.state is RegistrationState.FAILED
    client.reactor.advance(3600)
    assert client.fresh() == []


def test_challenge_without_a_password_fails_clearly(client: Client) -> None:
    """A 401 when no password is configured fails at once, naming the missing setting."""
    d = client.register(expires=100)
    client.reply(client.last(), 401, "Unauthorized", CHALLENGE)
    failure = failure_of(d)
    assert failure.check(AuthenticationError)
    assert "password" in str(failure.value)
    assert len(client.attempts()) == 1


# -- addresses ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("settings", "host"),
    [({}, "127.0.0.1"), ({"advertised_host": "192.0.2.7"}, "192.0.2.7")],
)
def test_wildcard_bind_never_puts_0000_in_contact_or_via(
    settings: dict[str, str], host: str
) -> None:
    """Bound to 0.0.0.0, Via and Contact carry 127.0.0.1 (or advertised_host) and rport."""
    client = Client(host="0.0.0.0", **settings)
    try:
        client.register(expires=600).addErrback(lambda f: None)
        request = client.last()
        assert request.top_via.host == host
        assert request.top_via.rport is True
        assert [c.uri.host for c in request.contacts] == [host]
        assert b"0.0.0.0" not in client.wire.sent[-1][0]
        client.ok(request, "Expires: 600")
    finally:
        client.close()
