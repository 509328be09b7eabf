"""The c= address of an offer or answer: IP literals are used, names wait, garbage is 488.

sipd never resolves names on the 20 ms RTP path, so a domain name in c=
(RFC 8866 §5.7 allows one) gives the stream no remote until the peer's first
packet shows its address; anything that is neither an IP literal nor a
well-formed name (a NUL, spaces, a multicast /ttl) fails the negotiation
with SdpNegotiationError, which a UAS answers 488.
"""

from __future__ import annotations

import pytest

from sipd.errors import SdpNegotiationError
from sipd.sdp import PCMU, build_offer, negotiate_answer, parse_sdp, process_answer
from sipd.sdp.addresses import is_ip_address, is_usable_connection_address


def offer_with(address: str) -> bytes:
    return (
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\n"
        f"c=IN IP4 {address}\r\nt=0 0\r\n"
        "m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    ).encode()


def answer(address: str) -> tuple[str | None, int]:
    result = negotiate_answer(
        parse_sdp(offer_with(address)),
        "198.51.100.2",
        30000,
        [PCMU],
        session_id=1,
        session_version=1,
    )
    return result.remote_address, result.remote_port


@pytest.mark.parametrize("address", ["192.0.2.7", "0.0.0.0", "2001:db8::1", "::"])
def test_ip_literals_are_used(address: str) -> None:
    assert is_ip_address(address)
    assert answer(address) == (address, 4000)


@pytest.mark.parametrize("address", ["host.atlanta.example.com", "media", "pc33.example.com."])
def test_domain_names_pass_negotiation_but_are_not_ip_addresses(address: str) -> None:
    assert not is_ip_address(address)
    assert is_usable_connection_address(address)
    assert answer(address) == (address, 4000)


@pytest.mark.parametrize(
    "address",
    ["1.2.3.4\x00", "192.0.2.1\x00evil", "224.2.1.1/127", "-bad-.example.com", "a..b", "x" * 64],
)
def test_addresses_that_are_no_address_fail_the_offer(address: str) -> None:
    assert not is_usable_connection_address(address)
    with pytest.raises(SdpNegotiationError, match="usable address"):
        answer(address)


def test_an_answer_with_an_unusable_address_fails_too() -> None:
    """The UAC side: the 2xx's SDP answer with a NUL in c= is unusable (the call gets BYE)."""
    offer = build_offer("192.0.2.1", 4000, [PCMU], session_id=1, session_version=1)
    bad = parse_sdp(offer_with("10.0.0.1\x00"))
    with pytest.raises(SdpNegotiationError):
        process_answer(offer, bad)
