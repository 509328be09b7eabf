"""Behind NAT, a registering UA advertises the address its registrar saw (RFC 3581)."""

from __future__ import annotations

from sipd.sip.message import Request
from tests.unit.test_registration import Client, result_of


def _ok_seen_from(client: Client, request: Request, host: str, port: int) -> None:
    """Answer 200 with the registrar's received/rport stamped on the top Via."""
    top, *rest = request.headers.get_all("Via")
    stamped = top.replace(";rport", f";received={host};rport={port}", 1)
    lines = [
        "SIP/2.0 200 OK",
        f"Via: {stamped}",
        *(f"Via: {v}" for v in rest),
        f"From: {request.headers.get('From')}",
        f"To: {request.headers.get('To')};tag=registrar1",
        f"Call-ID: {request.call_id}",
        f"CSeq: {request.cseq.number} REGISTER",
        f"Contact: <sip:alice@{host}:{port}>;expires=3600",
        "Content-Length: 0",
        "",
        "",
    ]
    client.coordinator.transport.datagramReceived("\r\n".join(lines).encode(), ("127.0.0.1", 5070))


def test_a_natted_contact_is_re_registered_at_the_seen_address() -> None:
    """A 200 showing another source address makes the UA register that address instead,
    removing the old binding in the same REGISTER, and use it in later Contact/Via."""
    client = Client()
    d = client.register()
    first = client.last()
    assert first.contacts[0].uri.host == "127.0.0.1"
    _ok_seen_from(client, first, "192.0.2.7", 40000)
    assert not d.called  # registered only once the rewritten contact is accepted
    second = client.last()
    contacts = second.headers.get_all("Contact")
    assert contacts[0] == "<sip:alice@192.0.2.7:40000>", contacts
    assert contacts[1] == "<sip:alice@127.0.0.1:5062>;expires=0", contacts
    assert second.top_via.sent_by == ("192.0.2.7", 40000)
    assert second.call_id == first.call_id and second.cseq.number == first.cseq.number + 1
    # The registrar now sees the same address we advertise: no further rewrite.
    _ok_seen_from(client, second, "192.0.2.7", 40000)
    result_of(d)
    assert client.fresh() == []
    assert client.coordinator.dialogs.contact == "<sip:alice@192.0.2.7:40000>"
    client.close()


def test_nat_rewrite_can_be_turned_off() -> None:
    """With nat_rewrite=False the UA keeps its own contact whatever the registrar saw."""
    client = Client(nat_rewrite=False)
    d = client.register()
    first = client.last()
    _ok_seen_from(client, first, "192.0.2.7", 40000)
    result_of(d)
    assert client.fresh() == []
    assert client.coordinator.dialogs.contact == "<sip:alice@127.0.0.1:5062>"
    client.close()
