"""SRTP/SRTCP (RFC 3711) between two contexts keyed by SDES, and a known-answer test.

The known-answer test checks libsrtp's output byte for byte against an independent
computation: AES-CM and HMAC-SHA1 from ``cryptography`` with the session keys that
RFC 3711 Appendix B.3 derives from its master key. RFC 3711 has no whole-packet vector,
so the test composes B.3 (key derivation) and §4.1.1/§4.2 (keystream IV, auth tag); the
helper itself is first checked against the B.2 keystream and the B.3 derivation.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from sipd.errors import MediaValueError, SipdError
from sipd.media import g711
from sipd.media.rtcp import ReceiverReport, SenderReport
from sipd.media.rtp import RtpPacket, RtpSender
from sipd.media.srtp import SRTCP_TRAILER, SrtpContext, SrtpError
from sipd.media.tones import tone
from sipd.sdp.crypto import (
    RTP_SAVP,
    NegotiatedSrtp,
    SrtpKeys,
    SrtpSuite,
    answer_srtp,
    offer_srtp,
    process_srtp_answer,
)
from sipd.sdp.model import MediaDescription

S80 = SrtpSuite.AES_CM_128_HMAC_SHA1_80
S32 = SrtpSuite.AES_CM_128_HMAC_SHA1_32


def sdes_pair(suite: SrtpSuite) -> tuple[SrtpContext, SrtpContext]:
    """Alice offers (srtp required, only ``suite``), Bob answers; each side's context is
    built from its own key and the key the other put in its SDP."""
    offer = offer_srtp("required", [suite])
    offered = MediaDescription("audio", 4000, RTP_SAVP, ["0"])
    offer.apply(offered)
    bob_decision = answer_srtp("required", offered)
    answered = MediaDescription("audio", 5000, RTP_SAVP, ["0"])
    bob_decision.apply(answered)
    alice_decision = process_srtp_answer(offer, answered)
    assert bob_decision.keys is not None and alice_decision.keys is not None
    return (
        SrtpContext.from_negotiated(alice_decision.keys),
        SrtpContext.from_negotiated(bob_decision.keys),
    )


def g711_tone_packets(count: int, ssrc: int = 0x1234ABCD) -> list[bytes]:
    """``count`` 20 ms PCMU packets of a 1 kHz tone."""
    sender = RtpSender(0, ssrc=ssrc, sequence=65530, timestamp=1000)
    samples = tone(1000, 0.02 * count)
    return [
        sender.packetize_bytes(g711.encode("PCMU", samples[i * 160 : (i + 1) * 160]))
        for i in range(count)
    ]


def rtcp_rr(ssrc: int = 0x1234ABCD) -> bytes:
    return bytes(ReceiverReport(ssrc))


def protect_all(context: SrtpContext, packets: list[bytes]) -> list[bytes]:
    protected = [context.protect_rtp(p) for p in packets]
    assert all(p is not None for p in protected)
    return [p for p in protected if p is not None]


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize(("suite", "tag"), [(S80, 10), (S32, 4)])
def test_round_trip_both_ways_with_the_suite_tag_length(suite: SrtpSuite, tag: int) -> None:
    alice, bob = sdes_pair(suite)
    assert alice.tag_length == bob.tag_length == tag
    for sender, receiver in ((alice, bob), (bob, alice)):
        for packet in g711_tone_packets(10):  # the sequence wraps 65535 -> 0 on the way
            protected = sender.protect_rtp(packet)
            assert protected is not None
            assert len(protected) == len(packet) + tag
            assert receiver.unprotect_rtp(protected) == packet
        assert sender.stats.rtp_protected == receiver.stats.rtp_unprotected == 10
        assert receiver.stats.dropped == 0


def test_the_payload_is_encrypted_and_the_header_is_not() -> None:
    """RFC 3711 §3.1: the header stays readable, the G.711 tone must not appear."""
    alice, _ = sdes_pair(S80)
    packet = g711_tone_packets(1)[0]
    payload = packet[12:]
    protected = alice.protect_rtp(packet)
    assert protected is not None
    assert protected[:12] == packet[:12]
    assert protected[12:172] != payload
    # No 8-byte run of the tone survives anywhere in the packet.
    assert all(payload[i : i + 8] not in protected for i in range(0, len(payload) - 8))
    assert RtpPacket.parse(protected[:-10]).payload != payload


def test_each_direction_uses_its_own_key() -> None:
    """The same RTP packet protected by the two sides gives different bytes, and a side
    cannot read its own packets (it checks with the peer's key)."""
    alice, bob = sdes_pair(S80)
    packet = g711_tone_packets(1)[0]
    from_alice, from_bob = alice.protect_rtp(packet), bob.protect_rtp(packet)
    assert from_alice is not None and from_bob is not None and from_alice != from_bob
    assert alice.unprotect_rtp(from_alice) is None
    assert alice.stats.auth_failures == 1


@pytest.mark.parametrize("suite", list(SrtpSuite))
def test_rtcp_round_trip_with_an_80_bit_tag_for_both_suites(suite: SrtpSuite) -> None:
    """SRTCP adds the E flag and index (4 bytes) and an 80-bit tag for both suites
    (RFC 4568 §6.2.2: _32 shortens only the SRTP tag)."""
    alice, bob = sdes_pair(suite)
    report = rtcp_rr()
    protected = alice.protect_rtcp(report)
    assert protected is not None
    assert len(protected) == len(report) + SRTCP_TRAILER
    assert protected[-14] & 0x80  # E flag: encrypted (RFC 3711 §3.4)
    assert bob.unprotect_rtcp(protected) == report
    assert (alice.stats.rtcp_protected, bob.stats.rtcp_unprotected) == (1, 1)


# --- what must be dropped --------------------------------------------------------------------


@pytest.mark.parametrize("position", [2, 4, 12, 100, -1, -10])
def test_a_tampered_packet_is_dropped_as_an_auth_failure(position: int) -> None:
    """Any flipped bit, in header, payload or tag, fails authentication (RFC 3711 §3.4)."""
    alice, bob = sdes_pair(S80)
    protected = alice.protect_rtp(g711_tone_packets(1)[0])
    assert protected is not None
    tampered = bytearray(protected)
    tampered[position] ^= 0x01
    assert bob.unprotect_rtp(bytes(tampered)) is None
    assert (bob.stats.auth_failures, bob.stats.rtp_unprotected) == (1, 0)
    assert bob.stats.last_drop == "authentication failure"
    assert bob.unprotect_rtp(protected) is not None  # the genuine one still passes


def test_a_replayed_packet_is_dropped() -> None:
    alice, bob = sdes_pair(S80)
    protected = alice.protect_rtp(g711_tone_packets(1)[0])
    assert protected is not None
    assert bob.unprotect_rtp(protected) is not None
    assert bob.unprotect_rtp(protected) is None
    assert (bob.stats.replays, bob.stats.auth_failures, bob.stats.dropped) == (1, 0, 1)
    assert bob.stats.last_drop is not None and "replay" in bob.stats.last_drop


def test_reordering_inside_the_window_passes_and_too_old_is_a_replay() -> None:
    """libsrtp's replay window (128 packets, RFC 3711 §3.3.2) accepts late packets it has
    not seen, and refuses one that fell behind the window."""
    alice, bob = sdes_pair(S80)
    sent = protect_all(alice, g711_tone_packets(200))
    for index in (5, 3, 4, 199):
        assert bob.unprotect_rtp(sent[index]) is not None
    assert bob.unprotect_rtp(sent[0]) is None
    assert bob.stats.replays == 1 and bob.stats.rtp_unprotected == 4


def test_rtcp_tampering_and_replay_are_dropped() -> None:
    alice, bob = sdes_pair(S32)
    protected = alice.protect_rtcp(rtcp_rr())
    assert protected is not None
    tampered = protected[:-1] + bytes([protected[-1] ^ 0x80])
    assert bob.unprotect_rtcp(tampered) is None
    assert bob.unprotect_rtcp(protected) is not None
    assert bob.unprotect_rtcp(protected) is None
    assert (bob.stats.auth_failures, bob.stats.replays) == (1, 1)


def test_a_wrong_key_is_rejected() -> None:
    alice, _ = sdes_pair(S80)
    stranger = SrtpContext(SrtpKeys.generate(S80), SrtpKeys.generate(S80))
    protected = alice.protect_rtp(g711_tone_packets(1)[0])
    rtcp = alice.protect_rtcp(rtcp_rr())
    assert protected is not None and rtcp is not None
    assert stranger.unprotect_rtp(protected) is None
    assert stranger.unprotect_rtcp(rtcp) is None
    assert stranger.stats.auth_failures == 2


def test_plain_rtp_and_rtcp_are_not_accepted() -> None:
    """A peer that sends plain RTP on an SRTP call is dropped, not played."""
    _, bob = sdes_pair(S80)
    assert bob.unprotect_rtp(g711_tone_packets(1)[0]) is None
    assert bob.unprotect_rtcp(rtcp_rr()) is None
    assert bob.stats.dropped == 2 and bob.stats.rtp_unprotected == 0


@pytest.mark.parametrize(
    "datagram", [b"", b"\x80", bytes(12), b"\x80\x00" + bytes(20), b"\x8f" + bytes(30), bytes(2000)]
)
def test_malformed_datagrams_are_counted_not_raised(datagram: bytes) -> None:
    _, bob = sdes_pair(S80)
    assert bob.unprotect_rtp(datagram) is None
    assert bob.unprotect_rtcp(datagram) is None
    assert bob.stats.dropped == 2


@settings(max_examples=300)
@given(st.binary(max_size=1600))
def test_no_datagram_makes_unprotect_raise(datagram: bytes) -> None:
    _, bob = sdes_pair(S32)
    assert bob.unprotect_rtp(datagram) is None
    assert bob.unprotect_rtcp(datagram) is None


def test_protecting_a_sequence_number_twice_is_refused() -> None:
    """Sending two packets with one index would reuse keystream: libsrtp refuses, we count."""
    alice, _ = sdes_pair(S80)
    packet = g711_tone_packets(1)[0]
    assert alice.protect_rtp(packet) is not None
    assert alice.protect_rtp(packet) is None
    assert alice.protect_rtp(b"\x80") is None
    assert (alice.stats.protect_failures, alice.stats.rtp_protected) == (2, 1)


def test_a_new_ssrc_from_the_peer_is_accepted() -> None:
    """The peer restarting its stream with a new SSRC keeps the same master key."""
    alice, bob = sdes_pair(S80)
    for ssrc in (1, 2):
        protected = alice.protect_rtp(g711_tone_packets(1, ssrc=ssrc)[0])
        assert protected is not None and bob.unprotect_rtp(protected) is not None


def test_rekeying_one_direction_keeps_the_other_stream_going() -> None:
    """Bob re-INVITEs with a new key after Alice's sequence numbers wrapped: both replace
    only Bob's direction, and Alice's stream keeps its rollover counter (RFC 3711 §3.3.1),
    which a rebuilt outbound side would have restarted at 0."""
    alice_key, bob_key, bob_new = (SrtpKeys.generate(S80) for _ in range(3))
    alice, bob = SrtpContext(alice_key, bob_key), SrtpContext(bob_key, alice_key)
    packets = g711_tone_packets(12)  # sequence 65530..65535, 0..5
    for packet in protect_all(alice, packets[:8]):  # ROC is 1 from the 7th on
        assert bob.unprotect_rtp(packet) is not None
    old_from_bob = bob.protect_rtp(g711_tone_packets(1, ssrc=7)[0])
    bob.rekey(local=bob_new)
    alice.rekey(remote=bob_new)
    assert old_from_bob is not None and alice.unprotect_rtp(old_from_bob) is None
    new_from_bob = bob.protect_rtp(g711_tone_packets(1, ssrc=8)[0])
    assert new_from_bob is not None and alice.unprotect_rtp(new_from_bob) is not None
    for packet in protect_all(alice, packets[8:]):
        assert bob.unprotect_rtp(packet) is not None
    assert bob.stats.auth_failures == 0
    with pytest.raises(SrtpError, match="cannot rekey"):
        alice.rekey(local=SrtpKeys.generate(S32))


def test_keys_of_two_suites_cannot_make_a_context() -> None:
    with pytest.raises(SrtpError, match="share a suite") as caught:
        SrtpContext(SrtpKeys.generate(S80), SrtpKeys.generate(S32))
    assert isinstance(caught.value, MediaValueError) and isinstance(caught.value, SipdError)


def test_repr_shows_counts_not_keys() -> None:
    local, remote = SrtpKeys.generate(S80), SrtpKeys.generate(S80)
    context = SrtpContext.from_negotiated(NegotiatedSrtp(1, local, remote))
    shown = repr(context) + str(context) + repr(context.stats)
    for keys in (local, remote):
        assert keys.to_base64() not in shown and keys.key_salt.hex() not in shown
    assert "AES_CM_128_HMAC_SHA1_80" in shown


# --- known answer: RFC 3711 Appendix B -------------------------------------------------------

# B.3: master key and salt, and the session keys RFC 3711 lists for them (kdr = 0).
B3_MASTER_KEY = bytes.fromhex("E1F97A0D3E018BE0D64FA32C06DE4139")
B3_MASTER_SALT = bytes.fromhex("0EC675AD498AFEEBB6960B3AABE6")
B3_CIPHER_KEY = bytes.fromhex("C61E7A93744F39EE10734AFE3FF7A087")
B3_CIPHER_SALT = bytes.fromhex("30CBBC08863D8C85D49DB34A9AE1")
B3_AUTH_KEY = bytes.fromhex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")


def aes_cm(key: bytes, iv: bytes, length: int) -> bytes:
    """AES in counter mode (RFC 3711 §4.1.1): the keystream from the 128-bit ``iv``."""
    encryptor = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return encryptor.update(bytes(length)) + encryptor.finalize()


def kdf(master_key: bytes, master_salt: bytes, label: int, length: int) -> bytes:
    """RFC 3711 §4.3.1 with kdr = 0: x = (label || r=0) XOR salt, IV = x * 2^16."""
    x = int.from_bytes(master_salt, "big") ^ (label << 48)
    return aes_cm(master_key, (x << 16).to_bytes(16, "big"), length)


def test_the_helper_matches_rfc_3711_b2_and_b3() -> None:
    """B.2's keystream and B.3's derived keys, so the known answer below rests on the RFC."""
    b2 = aes_cm(
        bytes.fromhex("2B7E151628AED2A6ABF7158809CF4F3C"),
        bytes.fromhex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000"),
        48,
    )
    assert b2.hex().upper() == (
        "E03EAD0935C95E80E166B16DD92B4EB4"
        "D23513162B02D0F72A43A2FE4A5F97AB"
        "41E95B3BB0A2E8DD477901E4FCA894C0"
    )
    assert kdf(B3_MASTER_KEY, B3_MASTER_SALT, 0, 16) == B3_CIPHER_KEY
    assert kdf(B3_MASTER_KEY, B3_MASTER_SALT, 1, 20) == B3_AUTH_KEY
    assert kdf(B3_MASTER_KEY, B3_MASTER_SALT, 2, 14) == B3_CIPHER_SALT


def expected_srtp(packet: bytes, tag_length: int, roc: int = 0) -> bytes:
    """RFC 3711 §3.1 by hand with the B.3 session keys: encrypt the payload with the
    keystream of IV = (salt * 2^16) XOR (SSRC * 2^64) XOR (index * 2^16) (§4.1.1), then
    append HMAC-SHA1(auth key, header || ciphertext || ROC) cut to the tag (§4.2)."""
    _, _, seq, _, ssrc = struct.unpack_from("!BBHII", packet)
    index = (roc << 16) | seq
    salt = int.from_bytes(B3_CIPHER_SALT, "big")
    iv = ((salt << 16) ^ (ssrc << 64) ^ (index << 16)).to_bytes(16, "big")
    payload = packet[12:]
    stream = aes_cm(B3_CIPHER_KEY, iv, len(payload))
    encrypted = packet[:12] + bytes(a ^ b for a, b in zip(payload, stream, strict=True))
    mac = hmac.new(B3_AUTH_KEY, encrypted + roc.to_bytes(4, "big"), hashlib.sha1).digest()
    return encrypted + mac[:tag_length]


@pytest.mark.parametrize(("suite", "tag"), [(S80, 10), (S32, 4)])
def test_known_answer_from_rfc_3711_appendix_b(suite: SrtpSuite, tag: int) -> None:
    """libsrtp, keyed through our SrtpKeys with the B.3 master key, produces exactly the
    bytes the RFC's session keys give, and the receiving context reads them back. The
    tone's sequence numbers run 65530..65535, 0, 1: the last two carry ROC 1 (§3.3.1)."""
    master = SrtpKeys(suite, B3_MASTER_KEY + B3_MASTER_SALT)
    sender = SrtpContext(master, SrtpKeys.generate(suite))
    receiver = SrtpContext(SrtpKeys.generate(suite), master)
    packets = g711_tone_packets(8, ssrc=0xCAFEBABE)
    for number, (packet, protected) in enumerate(
        zip(packets, protect_all(sender, packets), strict=True)
    ):
        assert protected == expected_srtp(packet, tag, roc=0 if number < 6 else 1)
        assert receiver.unprotect_rtp(protected) == packet
    other = bytes.fromhex("8000000100000000DEADBEEF") + bytes(range(160))
    assert sender.protect_rtp(other) == expected_srtp(other, tag)


def test_known_answer_for_srtcp() -> None:
    """RFC 3711 §3.4 and §4.3.2 (labels 3, 4, 5) with the B.3 master key: the SRTCP
    packet is header || encrypted rest || E+index || HMAC-SHA1 tag of 80 bits."""
    master = SrtpKeys(S80, B3_MASTER_KEY + B3_MASTER_SALT)
    sender = SrtpContext(master, SrtpKeys.generate(S80))
    report = bytes(SenderReport(0xCAFEBABE, 1 << 32, 160, 1, 160)) + rtcp_rr(0xCAFEBABE)
    protected = sender.protect_rtcp(report)
    assert protected is not None
    e_index = struct.unpack_from("!I", protected, len(report))[0]
    assert e_index >> 31 == 1
    index = e_index & 0x7FFFFFFF
    key = kdf(B3_MASTER_KEY, B3_MASTER_SALT, 3, 16)
    salt = int.from_bytes(kdf(B3_MASTER_KEY, B3_MASTER_SALT, 5, 14), "big")
    auth = kdf(B3_MASTER_KEY, B3_MASTER_SALT, 4, 20)
    iv = ((salt << 16) ^ (0xCAFEBABE << 64) ^ (index << 16)).to_bytes(16, "big")
    stream = aes_cm(key, iv, len(report) - 8)
    body = report[:8] + bytes(a ^ b for a, b in zip(report[8:], stream, strict=True))
    trailer = e_index.to_bytes(4, "big")
    mac = hmac.new(auth, body + trailer, hashlib.sha1).digest()[:10]
    assert protected == body + trailer + mac
