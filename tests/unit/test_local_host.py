"""A UA bound to a wildcard address advertises the address that routes to its peer."""

from __future__ import annotations

from twisted.internet.task import Clock

from sipd.config import SipdConfig
from sipd.session.coordinator import UnifiedCoordinator


class _Reactor(Clock):
    """Enough of a reactor for a coordinator that is never started."""


def _coordinator(**settings: object) -> UnifiedCoordinator:
    return UnifiedCoordinator(SipdConfig(**settings), reactor=_Reactor())  # type: ignore[arg-type]


def test_a_wildcard_bound_ua_learns_the_routed_address() -> None:
    """Bound to 0.0.0.0, the contact host becomes the local address towards the peer."""
    coordinator = _coordinator(host="0.0.0.0", port=0)
    assert coordinator.config.advertised_host is None
    coordinator.learn_local_host("127.0.0.1")
    assert coordinator.config.advertised_host == "127.0.0.1"
    assert coordinator.config.contact_host == "127.0.0.1"


def test_an_ipv6_wildcard_learns_an_ipv6_address() -> None:
    """Bound to ::, the learned address for an IPv6 peer is IPv6."""
    coordinator = _coordinator(host="::", port=0)
    coordinator.learn_local_host("::1")
    assert coordinator.config.advertised_host == "::1"


def test_an_explicit_address_or_advertised_host_is_kept() -> None:
    """Only wildcard binds without advertised_host are changed."""
    bound = _coordinator(host="127.0.0.1", port=0)
    bound.learn_local_host("127.0.0.1")
    assert bound.config.advertised_host is None
    advertised = _coordinator(host="0.0.0.0", port=0, advertised_host="192.0.2.10")
    advertised.learn_local_host("127.0.0.1")
    assert advertised.config.advertised_host == "192.0.2.10"
