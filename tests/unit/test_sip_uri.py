"""SIP, SIPS and tel URIs (RFC 3261 §19.1, §25; RFC 3966; RFC 4475 §3.1)."""

from __future__ import annotations

import pytest

from sipd.sip.errors import BadRequest, SipParseError, UnsupportedUriScheme
from sipd.sip.uri import Uri, parse_uri


def test_full_sip_uri_yields_every_component() -> None:
    """User, password, host, port, params and headers are each split out."""
    uri = parse_uri("sip:alice:secretword@atlanta.com:5070;transport=tcp;lr?subject=project&x=1")
    assert uri.scheme == "sip"
    assert uri.user == "alice"
    assert uri.password == "secretword"
    assert uri.host == "atlanta.com"
    assert uri.port == 5070
    assert uri.params == (("transport", "tcp"), ("lr", None))
    assert uri.headers == (("subject", "project"), ("x", "1"))
    assert uri.transport == "tcp"
    assert uri.param("lr") == ""
    assert uri.param("maddr") is None


def test_host_only_uri_has_no_user_and_no_port() -> None:
    uri = parse_uri("sip:biloxi.com")
    assert (uri.user, uri.password, uri.host, uri.port) == (None, None, "biloxi.com", None)
    assert uri.default_port == 5060


def test_sips_scheme_defaults_to_port_5061() -> None:
    uri = parse_uri("SIPS:bob@biloxi.com")
    assert uri.scheme == "sips"
    assert uri.default_port == 5061


def test_ipv4_host_and_port() -> None:
    uri = parse_uri("sip:alice@192.0.2.4:5060")
    assert uri.host == "192.0.2.4"
    assert uri.port == 5060


def test_ipv6_reference_keeps_brackets_and_separates_port() -> None:
    """RFC 4475 §3.1.1.12 / RFC 5118: ``[2001:db8::10]:5070``."""
    uri = parse_uri("sip:user@[2001:db8::10]:5070;transport=udp")
    assert uri.host == "[2001:db8::10]"
    assert uri.host_for_socket == "2001:db8::10"
    assert uri.port == 5070
    assert uri.transport == "udp"


def test_ipv6_reference_without_port() -> None:
    uri = parse_uri("sip:[::1]")
    assert uri.host == "[::1]"
    assert uri.port is None


@pytest.mark.parametrize(
    ("text", "user"),
    [
        ("sip:%61lice@atlanta.com", "alice"),
        ("sip:%61%6C%69%63%65@atlanta.com", "alice"),
        ("sip:sips%3Auser%40example.com@example.net", "sips:user@example.com"),
        ("sip:a%20b@example.net", "a b"),
    ],
)
def test_escaped_user_is_unescaped(text: str, user: str) -> None:
    """%-escapes in the user part stand for the characters (RFC 3261 §19.1.4)."""
    assert parse_uri(text).user == user


def test_escaped_and_plain_user_compare_equal() -> None:
    """``sip:%61lice@atlanta.com`` and ``sip:alice@atlanta.com`` are the same URI."""
    assert parse_uri("sip:%61lice@atlanta.com") == parse_uri("sip:alice@atlanta.com")


def test_escaped_password_is_unescaped() -> None:
    assert parse_uri("sip:user:pa%3Ass@example.com").password == "pa:ss"


def test_user_with_semicolon_and_at_is_the_user() -> None:
    """RFC 4475 §3.1.1.8 style: the user part may hold ``;`` and the last ``@`` ends it."""
    uri = parse_uri("sip:user;par=u%40example.net@example.com")
    assert uri.user == "user;par=u@example.net"
    assert uri.host == "example.com"
    assert uri.params == ()


def test_uri_headers_are_unescaped() -> None:
    uri = parse_uri("sip:bob@biloxi.com?subject=hello%20there&priority=urgent")
    assert uri.headers == (("subject", "hello there"), ("priority", "urgent"))


def test_param_names_are_case_insensitive_and_values_kept() -> None:
    uri = parse_uri("sip:bob@biloxi.com;TRANSPORT=TCP;Maddr=239.255.255.1")
    assert uri.param("transport") == "TCP"
    assert uri.transport == "tcp"
    assert uri.param("MADDR") == "239.255.255.1"


def test_tel_uri_keeps_number_and_params() -> None:
    uri = parse_uri("tel:+1-201-555-0123;phone-context=example.com")
    assert uri.scheme == "tel"
    assert uri.user == "+1-201-555-0123"
    assert uri.host == ""
    assert uri.param("phone-context") == "example.com"
    assert str(uri) == "tel:+1-201-555-0123;phone-context=example.com"


@pytest.mark.parametrize("text", ["http://example.com/", "mailto:alice@example.com", "im:a@b"])
def test_unsupported_scheme_is_416(text: str) -> None:
    with pytest.raises(UnsupportedUriScheme) as info:
        parse_uri(text)
    assert info.value.status == 416
    assert text.split(":")[0] in str(info.value)


def test_unsupported_scheme_is_400_when_not_a_request_uri() -> None:
    """Inside a header (``require_supported=False``) a foreign scheme is plain bad syntax."""
    with pytest.raises(BadRequest) as info:
        parse_uri("http://example.com/", require_supported=False)
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("alice@atlanta.com", "URI"),
        ("sip:", "host"),
        ("sip:@atlanta.com", "user"),
        ("sip:alice@atlanta.com:0", "port"),
        ("sip:alice@atlanta.com:65536", "port"),
        ("sip:alice@atlanta.com:50x", "port"),
        ("sip:alice@[2001:db8::10", "IPv6"),
        ("sip:alice@[::1]x", "IPv6"),
        ("sip:alice@atl anta.com", "host"),
        ("sip:%6@atlanta.com", "escape"),
        ("sip:%zz@atlanta.com", "escape"),
        ("sip:alice@atlanta.com;=x", "parameter"),
        ("tel:", "number"),
        ("tel:+1 555", "telephone"),
    ],
)
def test_malformed_uri_is_400_naming_the_problem(text: str, word: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_uri(text)
    assert info.value.status == 400
    assert word.lower() in str(info.value).lower()


@pytest.mark.parametrize(
    "text",
    [
        "sip:alice@atlanta.com",
        "sip:alice:pw@atlanta.com:5070;transport=tcp;lr",
        "sips:[2001:db8::1]:5061;maddr=[2001:db8::2]",
        "sip:bob@biloxi.com?subject=hi&priority=urgent",
        "sip:+15555550123;isub=1@gw.example.com;user=phone",
        "tel:+15555550123",
    ],
)
def test_str_round_trips(text: str) -> None:
    """Printing a parsed URI and parsing the text again gives the same URI."""
    uri = parse_uri(text)
    assert parse_uri(str(uri)) == uri


def test_str_escapes_what_must_be_escaped() -> None:
    uri = Uri(scheme="sip", host="example.com", user="a b@c", password="p@ss")
    text = str(uri)
    assert text == "sip:a%20b%40c:p%40ss@example.com"
    assert parse_uri(text) == uri


def test_with_param_and_without_param_return_new_uris() -> None:
    uri = parse_uri("sip:bob@biloxi.com")
    lr = uri.with_param("lr")
    assert str(lr) == "sip:bob@biloxi.com;lr"
    assert str(lr.with_param("transport", "tcp").without_param("lr")) == (
        "sip:bob@biloxi.com;transport=tcp"
    )
    assert str(uri) == "sip:bob@biloxi.com"


def test_aor_drops_port_params_and_lowercases_host() -> None:
    assert parse_uri("sip:Bob@BILOXI.com:5070;transport=tcp").aor == "sip:Bob@biloxi.com"


def test_repeated_parse_returns_equal_immutable_uris() -> None:
    """A URI parsed twice compares equal and cannot be changed in place."""
    first = parse_uri("sip:carol@chicago.com;lr")
    second = parse_uri("sip:carol@chicago.com;lr")
    assert first == second
    with pytest.raises(AttributeError):
        first.host = "evil.example.com"  # type: ignore[misc]


def test_a_failed_parse_fails_again() -> None:
    """Errors are raised every time, never remembered as a result."""
    for _ in range(2):
        with pytest.raises(SipParseError):
            parse_uri("sip:alice@atlanta.com:99999")
