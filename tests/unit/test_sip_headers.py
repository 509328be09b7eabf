"""Header values: the Headers block, compact forms, name-addr, Via and CSeq (RFC 3261 §7.3, §20)."""

from __future__ import annotations

import pytest

from sipd.sip.address import NameAddr, parse_name_addr
from sipd.sip.errors import BadRequest
from sipd.sip.grammar import quote, split_list, unquote
from sipd.sip.headers import COMPACT_FORMS, CSeq, Headers, canonical_name, parse_cseq
from sipd.sip.via import MAGIC_COOKIE, Via, parse_via, response_address

# RFC 3261 §7.3.3 and §20, RFC 3265 (o, u), RFC 3515 (r), RFC 3892 (b),
# RFC 4028 (x), RFC 4474 (y).
COMPACT = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
    "o": "Event",
    "u": "Allow-Events",
    "r": "Refer-To",
    "x": "Session-Expires",
    "y": "Identity",
    "b": "Referred-By",
}


# -- Headers container ------------------------------------------------------


@pytest.mark.parametrize(("short", "full"), sorted(COMPACT.items()))
def test_compact_form_is_expanded_and_found_by_either_name(short: str, full: str) -> None:
    h = Headers([(short, "value")])
    assert list(h) == [(full, "value")]
    assert h.get(full) == "value"
    assert h.get(short) == "value"
    assert h.get(short.upper()) == "value"
    assert canonical_name(short) == full
    assert COMPACT_FORMS[short] == full


@pytest.mark.parametrize("spelling", ["call-id", "CALL-ID", "Call-Id", "cAlL-iD", "i", "I"])
def test_header_names_match_case_insensitively(spelling: str) -> None:
    h = Headers([("Call-ID", "abc@host")])
    assert h.get(spelling) == "abc@host"
    assert spelling in h


def test_known_names_get_their_canonical_spelling() -> None:
    h = Headers([("cseq", "1 INVITE"), ("WWW-AUTHENTICATE", "Digest x"), ("max-forwards", "70")])
    assert [n for n, _ in h] == ["CSeq", "WWW-Authenticate", "Max-Forwards"]


def test_unknown_header_name_keeps_its_spelling() -> None:
    h = Headers([("X-My-wEIRD-Header", "v")])
    assert list(h) == [("X-My-wEIRD-Header", "v")]
    assert h.get("x-my-weird-header") == "v"


def test_values_flattens_repeated_and_comma_separated_lines_alike() -> None:
    """RFC 3261 §7.3.1: ``Route: a, b`` equals two ``Route`` lines."""
    one = Headers([("Route", "<sip:a@x;lr>, <sip:b@y;lr>")])
    two = Headers([("Route", "<sip:a@x;lr>"), ("Route", "<sip:b@y;lr>")])
    assert one.values("Route") == two.values("Route") == ["<sip:a@x;lr>", "<sip:b@y;lr>"]


def test_values_keeps_commas_inside_quotes_and_angle_brackets() -> None:
    h = Headers([("Contact", '"Doe, John" <sip:j@x;a=1,2>, <sip:k@y>')])
    assert h.values("Contact") == ['"Doe, John" <sip:j@x;a=1,2>', "<sip:k@y>"]


def test_get_all_returns_each_line_unsplit() -> None:
    h = Headers([("Via", "SIP/2.0/UDP a, SIP/2.0/UDP b"), ("v", "SIP/2.0/UDP c")])
    assert h.get_all("Via") == ["SIP/2.0/UDP a, SIP/2.0/UDP b", "SIP/2.0/UDP c"]
    assert h.first_value("Via") == "SIP/2.0/UDP a"


def test_set_replaces_every_line_at_the_first_place() -> None:
    h = Headers([("X-A", "1"), ("Via", "x"), ("X-B", "2"), ("Via", "y")])
    h.set("via", "z")
    assert list(h) == [("X-A", "1"), ("Via", "z"), ("X-B", "2")]


def test_prepend_puts_the_value_above_existing_ones() -> None:
    h = Headers([("From", "f"), ("Via", "old")])
    h.prepend("Via", "new")
    assert h.get_all("Via") == ["new", "old"]
    assert next(iter(h)) == ("From", "f")


def test_pop_first_value_takes_one_element_of_a_list_line() -> None:
    h = Headers([("Route", "<sip:a>, <sip:b>"), ("Route", "<sip:c>")])
    assert h.pop_first_value("Route") == "<sip:a>"
    assert h.values("Route") == ["<sip:b>", "<sip:c>"]
    assert h.pop_first_value("Route") == "<sip:b>"
    assert h.pop_first_value("Route") == "<sip:c>"
    assert h.pop_first_value("Route") is None
    assert "Route" not in h


def test_remove_counts_lines_and_every_change_bumps_version() -> None:
    h = Headers([("Via", "a"), ("Via", "b"), ("To", "t")])
    v0 = h.version
    assert h.remove("VIA") == 2
    assert h.version > v0
    v1 = h.version
    assert h.remove("Via") == 0
    assert h.version == v1
    h.add("X", "1")
    assert h.version > v1


def test_copy_is_independent() -> None:
    h = Headers([("To", "t")])
    c = h.copy()
    c.add("From", "f")
    assert "From" not in h


# -- quoting ------------------------------------------------------------------


def test_quote_and_unquote_are_inverse_with_escapes() -> None:
    text = 'say "hi" \\ bye'
    assert quote(text) == '"say \\"hi\\" \\\\ bye"'
    assert unquote(quote(text)) == text


def test_split_list_rejects_unterminated_quote() -> None:
    with pytest.raises(BadRequest, match="quoted"):
        split_list('"abc, def')


# -- name-addr / addr-spec ----------------------------------------------------


def test_name_addr_with_quoted_display_name_and_tag() -> None:
    na = parse_name_addr('"Alice Liddell" <sip:alice@atlanta.com>;tag=1928301774')
    assert na.display_name == "Alice Liddell"
    assert na.uri.user == "alice"
    assert na.tag == "1928301774"


def test_display_name_escapes_are_resolved() -> None:
    """RFC 4475 §3.1.1.1-style: ``\\"`` and ``\\\\`` inside the display name."""
    na = parse_name_addr(r'"J Rosenberg \\\"Jdrosen\"" <sip:jdrosen@example.com>;tag=98asjd8')
    assert na.display_name == 'J Rosenberg \\"Jdrosen"'
    assert na.tag == "98asjd8"


def test_display_name_may_contain_angle_brackets_and_semicolons() -> None:
    na = parse_name_addr('"a <b>; c=d" <sip:x@y>;tag=1')
    assert na.display_name == "a <b>; c=d"
    assert na.uri.host == "y"
    assert na.params == (("tag", "1"),)


def test_unquoted_token_display_name() -> None:
    na = parse_name_addr("Bob Smith <sip:bob@biloxi.com>")
    assert na.display_name == "Bob Smith"
    assert na.tag is None


def test_params_after_bracketed_uri_belong_to_the_header() -> None:
    na = parse_name_addr("<sip:bob@biloxi.com;transport=tcp>;tag=a6c85cf;expires=60")
    assert na.uri.param("transport") == "tcp"
    assert na.uri.param("tag") is None
    assert na.tag == "a6c85cf"
    assert na.param("expires") == "60"


def test_params_after_unbracketed_uri_belong_to_the_header() -> None:
    """RFC 3261 §20.10: in ``sip:a@b;tag=1`` the tag is a header parameter."""
    na = parse_name_addr("sip:bob@biloxi.com;tag=a6c85cf;transport=tcp")
    assert na.uri.params == ()
    assert na.tag == "a6c85cf"
    assert na.param("transport") == "tcp"
    assert na.display_name is None


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("", "empty"),
        ('"unterminated <sip:a@b>', "display"),
        ('"Alice" sip:alice@atlanta.com', "display"),
        ("<sip:alice@atlanta.com", "unterminated"),
        ("sip:alice@atlanta.com junk", "malformed"),
        ("<http://example.com>", "scheme"),
    ],
)
def test_malformed_address_is_400(text: str, word: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_name_addr(text)
    assert word in str(info.value).lower()


@pytest.mark.parametrize(
    "text",
    [
        '"Alice \\"A\\" Liddell" <sip:alice@atlanta.com>;tag=1',
        "Bob <sip:bob@biloxi.com;lr>;expires=3600",
        "<sips:carol@chicago.com>",
        "sip:dave@example.com;tag=9",
    ],
)
def test_name_addr_str_round_trips(text: str) -> None:
    na = parse_name_addr(text)
    assert parse_name_addr(str(na)) == na


def test_with_tag_adds_or_replaces_the_tag() -> None:
    na = NameAddr(uri=parse_name_addr("<sip:a@b>").uri)
    assert str(na.with_tag("x")) == "<sip:a@b>;tag=x"
    assert na.with_tag("x").with_tag("y").tag == "y"
    assert na.tag is None


# -- Via ------------------------------------------------------------------------


def test_via_parts_and_params() -> None:
    via = parse_via(
        "SIP/2.0/UDP pc33.atlanta.com:5066;branch=z9hG4bK776asdhds;received=192.0.2.1;rport=5067"
        ";maddr=224.2.0.1;ttl=16"
    )
    assert via.transport == "UDP"
    assert via.sent_by == ("pc33.atlanta.com", 5066)
    assert via.branch == "z9hG4bK776asdhds"
    assert via.is_rfc3261
    assert via.received == "192.0.2.1"
    assert via.rport == 5067
    assert via.maddr == "224.2.0.1"
    assert via.ttl == 16


def test_bare_rport_means_asked_for() -> None:
    via = parse_via("SIP/2.0/UDP 10.0.0.1;rport;branch=z9hG4bKx")
    assert via.rport is True
    assert via.port is None
    assert via.sent_by == ("10.0.0.1", 5060)


def test_via_without_rport_or_branch() -> None:
    via = parse_via("SIP/2.0/UDP 10.0.0.1:5060")
    assert via.rport is None
    assert via.branch is None
    assert not via.is_rfc3261


def test_via_branch_without_magic_cookie_is_not_rfc3261() -> None:
    assert not parse_via("SIP/2.0/UDP h;branch=abc").is_rfc3261
    assert MAGIC_COOKIE == "z9hG4bK"


def test_via_allows_blanks_around_slashes_and_semicolons() -> None:
    """RFC 3261 §25.1: SLASH and SEMI are ``SWS "/" SWS``; RFC 4475 §3.1.1.1."""
    via = parse_via("SIP / 2.0 / udp   host.example.com : 5060 ; branch = z9hG4bK9 ; rport")
    assert via.protocol == "SIP/2.0"
    assert via.transport == "UDP"
    assert via.sent_by == ("host.example.com", 5060)
    assert via.branch == "z9hG4bK9"
    assert via.rport is True


def test_via_ipv6_sent_by() -> None:
    via = parse_via("SIP/2.0/UDP [2001:db8::9:1]:5070;branch=z9hG4bKas;received=[2001:db8::9:255]")
    assert via.host == "[2001:db8::9:1]"
    assert via.port == 5070
    assert response_address(via) == ("2001:db8::9:255", 5070)


def test_via_ipv6_sent_by_without_port() -> None:
    via = parse_via("SIP/2.0/TCP [::1];branch=z9hG4bKa")
    assert via.sent_by == ("[::1]", 5060)


def test_via_str_round_trips() -> None:
    text = "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnashds8;rport;received=192.0.2.9"
    via = parse_via(text)
    assert str(via) == text
    assert parse_via(str(via.with_param("rport", "5062"))).rport == 5062


@pytest.mark.parametrize(
    "text",
    [
        "SIP/2.0 host",
        "SIP/2.0/UDP",
        "SIP/2.0/UDP host:abc",
        "SIP/2.0/UDP host:70000",
        "SIP/2.0/UDP [::1",
        "SIP/2.0/UDP [::1]junk",
        "SIP/2.0/UDP ;branch=z9hG4bK",
    ],
)
def test_malformed_via_is_400(text: str) -> None:
    with pytest.raises(BadRequest, match="Via"):
        parse_via(text)


@pytest.mark.parametrize(("param", "attr"), [("rport=abc", "rport"), ("ttl=300", "ttl")])
def test_bad_via_param_values_are_400_when_read(param: str, attr: str) -> None:
    via = parse_via(f"SIP/2.0/UDP h;branch=z9hG4bK1;{param}")
    with pytest.raises(BadRequest):
        getattr(via, attr)


def test_response_address_follows_received_rport_and_maddr() -> None:
    """RFC 3261 §18.2.2 and RFC 3581 §4."""
    base = Via("UDP", "pc.example.com", 5062)
    assert response_address(base, ("192.0.2.7", 40000)) == ("pc.example.com", 5062)
    asked = parse_via("SIP/2.0/UDP pc.example.com:5062;rport;received=192.0.2.7")
    assert response_address(asked, ("192.0.2.7", 40000)) == ("192.0.2.7", 40000)
    filled = parse_via("SIP/2.0/UDP pc.example.com:5062;rport=40001;received=192.0.2.7")
    assert response_address(filled) == ("192.0.2.7", 40001)
    multicast = parse_via("SIP/2.0/UDP pc.example.com;maddr=239.1.1.1;received=192.0.2.7")
    assert response_address(multicast) == ("239.1.1.1", 5060)


# -- CSeq -------------------------------------------------------------------------


def test_cseq_parses_number_and_method() -> None:
    assert parse_cseq("4711 INVITE") == CSeq(4711, "INVITE")
    assert parse_cseq("  1   REGISTER ") == CSeq(1, "REGISTER")
    assert str(CSeq(2, "BYE")) == "2 BYE"


def test_cseq_largest_number_is_accepted() -> None:
    assert parse_cseq(f"{2**31 - 1} ACK").number == 2**31 - 1


@pytest.mark.parametrize("text", [f"{2**31} INVITE", "99999999999999999999 INVITE"])
def test_cseq_number_of_2_to_the_31_or_more_is_400(text: str) -> None:
    """RFC 3261 §8.1.1.5: the number must be below 2**31 (RFC 4475 §3.1.2.1)."""
    with pytest.raises(BadRequest, match="CSeq"):
        parse_cseq(text)


@pytest.mark.parametrize("text", ["", "INVITE", "1", "-1 INVITE", "1 INVITE extra", "x1 BYE"])
def test_malformed_cseq_is_400(text: str) -> None:
    with pytest.raises(BadRequest, match="CSeq"):
        parse_cseq(text)
