"""sipd against a real registrar and proxy: Kamailio with digest authentication.

Kamailio (tests/interop/kamailio/kamailio.cfg, started by the harness on
free loopback ports) is the independent oracle: its location table
(``ul.dump``) says whether sipd's REGISTERs bound, refreshed and removed the
contact, and its log says which requests it challenged and relayed. Audio is
checked on the WAV files each sipd peer recorded, with the harness's numpy
spectrum (independent of sipd's media code) and sipd's tone detector.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer

from sipd import SimplePeer
from sipd.errors import AuthenticationError
from tests.conftest import PeerFactory, within
from tests.interop.harness import (
    Interop,
    Kamailio,
    assert_tone,
    free_udp_port_range,
    interop,
    settle,
    write_tone_wav,
)

__all__ = ["interop"]

pytestmark = pytest.mark.interop

ALICE_HZ, BOB_HZ = 440.0, 880.0
TONE_S = 1.5


def _media_range() -> dict[str, int]:
    """Media ports of one peer: a free block the harness hands out once."""
    first = free_udp_port_range(20)
    return {"media_port_min": first, "media_port_max": first + 19}


async def _registered_peer(
    peers: PeerFactory, k: Kamailio, user: str, **settings: object
) -> SimplePeer:
    """A sipd peer that registered at kamailio as ``user`` with its password."""
    peer: SimplePeer = await within(
        peers(
            user,
            registrar=k.uri,
            username=user,
            password=k.users[user],
            **_media_range(),
            **settings,
        ),
        10,
    )
    return peer


def _register_count(k: Kamailio, user: str) -> int:
    """REGISTERs for ``user`` that reached kamailio (its log has one line each)."""
    log = k.process.log_text(None)
    return len(re.findall(rf"<- REGISTER \S+ from .*\(From sip:{user}@", log))


@pytest_twisted.ensureDeferred
async def test_sipd_peers_register_with_digest_and_call_each_other_through_kamailio(
    interop: Interop, peers: PeerFactory, tmp_path: Path
) -> None:
    """alice calls bob by his AOR; the INVITE is challenged 407; tones cross both ways."""
    k = await interop.kamailio()
    alice = await _registered_peer(peers, k, "alice")
    bob = await _registered_peer(peers, k, "bob")

    table = await k.registrations()
    assert set(table) == {"alice", "bob"}, table
    for peer in (alice, bob):
        (binding,) = table[peer.name]
        assert binding.contact == f"sip:{peer.name}@127.0.0.1:{peer.port}", binding
        assert binding.user_agent.startswith("sipd"), binding
        assert binding.expires is not None and binding.expires > 3000, binding
    log = k.process.log_text(None)
    for peer in (alice, bob):
        user = peer.name
        bound = rf"registered sip:{user}@127\.0\.0\.1\S* -> <sip:{user}@127\.0\.0\.1:{peer.port}>"
        assert re.search(bound, log), k.report()
        # First REGISTER without credentials (401), then one with them.
        assert _register_count(k, user) == 2, k.report()

    alice_wav = write_tone_wav(tmp_path / "alice-tone.wav", ALICE_HZ, TONE_S)
    bob_wav = write_tone_wav(tmp_path / "bob-tone.wav", BOB_HZ, TONE_S)

    async def bob_answers() -> None:
        incoming = await within(bob.wait_for_incoming(), 10)
        assert incoming.dialled == "bob"
        call = await within(incoming.accept(), 10)
        recorded = call.record_wav(tmp_path / "bob-heard.wav")
        await within(call.play_wav(bob_wav), 10)
        await within(call.wait_for_end(), 10)
        await within(recorded, 5)

    bob_side = defer.ensureDeferred(bob_answers())
    call = await within(alice.call("bob"), 5)
    assert call.session.target is not None
    assert str(call.session.target) == k.aor("bob")
    await within(call.wait_for_answer(), 10)
    alice_recorded = call.record_wav(tmp_path / "alice-heard.wav")
    await within(call.play_wav(alice_wav), 10)
    # Let bob's last frames arrive before the BYE stops alice's media.
    await settle(0.3)
    await within(call.hangup(), 10)
    await within(bob_side, 15)
    await within(alice_recorded, 5)

    log = k.process.log_text(None)
    report = k.report()
    assert "challenging INVITE from sip:alice@" in log, report
    # The challenged INVITE came once more, same Call-ID, CSeq one higher.
    invites = re.findall(r"\{1 (\d+) INVITE (\S+)\} <script>: <- INVITE sip:bob@", log)
    assert len(invites) == 2, report
    (first_cseq, first_id), (retry_cseq, retry_id) = invites
    assert retry_id == first_id and int(retry_cseq) == int(first_cseq) + 1, invites
    # The retried INVITE was relayed to bob's registered contact.
    assert f"-> INVITE to sip:bob@127.0.0.1:{bob.port}" in log, report
    # The ACK and the BYE followed the Record-Route set through kamailio.
    assert re.search(rf"<- ACK sip:bob@127\.0\.0\.1:{bob.port}\S* from", log), report
    assert re.search(rf"<- BYE sip:bob@127\.0\.0\.1:{bob.port}\S* from", log), report
    assert "<- 200 OK for BYE" in log, report
    assert_tone(tmp_path / "alice-heard.wav", BOB_HZ, "alice heard", report)
    assert_tone(tmp_path / "bob-heard.wav", ALICE_HZ, "bob heard", report)


@pytest_twisted.ensureDeferred
async def test_a_wrong_password_fails_registration_once_without_retrying(
    interop: Interop, peers: PeerFactory
) -> None:
    """403 after the credentials: AuthenticationError naming the user, and no further REGISTER."""
    k = await interop.kamailio()
    dave = await peers("dave", **_media_range())
    reactor_start = dave.coordinator.clock.seconds()
    with pytest.raises(AuthenticationError) as raised:
        await within(dave.register(k.uri, username="dave", password="not-dave-secret"), 5)
    elapsed = dave.coordinator.clock.seconds() - reactor_start
    assert elapsed < 2.0, f"the failure took {elapsed:.1f}s"
    message = str(raised.value)
    assert "dave" in message and "403" in message, message
    assert "password" in message.lower(), message
    assert _register_count(k, "dave") == 2, k.report()
    assert "refusing REGISTER from sip:dave@" in k.process.log_text(None), k.report()
    # The peer stays up; nothing sends another REGISTER.
    await settle(2.0)
    assert _register_count(k, "dave") == 2, k.report()
    assert await k.registrations() == {}

    # The same through create(registrar=...): it fails and leaves no peer bound.
    with pytest.raises(AuthenticationError):
        await within(
            SimplePeer.create(
                "carol", 0, registrar=k.uri, username="carol", password="wrong", **_media_range()
            ),
            5,
        )
    assert _register_count(k, "carol") == 2, k.report()
    assert await k.registrations() == {}


@pytest_twisted.ensureDeferred
async def test_registration_is_refreshed_before_it_expires_and_removed_on_close(
    interop: Interop, peers: PeerFactory
) -> None:
    """With a 10 s expiry the binding is renewed in time; close() unbinds it at kamailio."""
    k = await interop.kamailio()
    carol = await _registered_peer(peers, k, "carol", register_expires=10)
    clock = carol.coordinator.clock
    registered_at = clock.seconds()
    (first,) = (await k.registrations())["carol"]
    assert first.expires is not None and first.expires <= 10, first
    assert first.contact == f"sip:carol@127.0.0.1:{carol.port}"

    # Poll until the binding's CSeq moves on: a refresh REGISTER was accepted.
    refreshed = None
    while clock.seconds() - registered_at < 12:
        bindings = (await k.registrations()).get("carol", [])
        assert bindings, f"carol's binding lapsed before a refresh\n{k.report()}"
        if bindings[0].cseq > first.cseq:
            refreshed = bindings[0]
            break
        await settle(0.2)
    assert refreshed is not None, f"no refresh REGISTER within 12 s\n{k.report()}"
    waited = clock.seconds() - registered_at
    assert waited < 10, f"the refresh came {waited:.1f}s after a 10 s registration"
    assert refreshed.call_id == first.call_id, "a refresh keeps the registration's Call-ID"
    assert refreshed.expires is not None and refreshed.expires >= 9, refreshed
    assert refreshed.contact == first.contact

    await within(carol.close(), 5)
    assert "carol" not in await k.registrations(), k.report()
    assert _register_count(k, "carol") >= 3, k.report()
