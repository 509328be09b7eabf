"""The console's sans-I/O parts: MOS estimate, redaction, SVG ladder, the recorder's bounds."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pytest

from sipd.capture.records import Direction, WireMessage
from sipd.console.mos import estimate_mos, mos_from_r, r_factor
from sipd.console.pages import call_page, calls_json
from sipd.console.recorder import ConsoleRecorder
from sipd.console.redact import redact
from sipd.console.svg import describe, ladder_svg, line_graph_svg
from sipd.session.taps import call_id_of

US = ("127.0.0.1", 5060)
THEM = ("127.0.0.1", 5062)


def msg(t: float, direction: Direction, text: str, call_id: str = "c1") -> WireMessage:
    data = text.replace("\n", "\r\n").encode()
    return WireMessage(t, direction, "udp", US, THEM, data, call_id)


def invite(call_id: str = "c1", extra: str = "") -> str:
    return (
        f"INVITE sip:svc@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5062\n"
        f"Call-ID: {call_id}\nCSeq: 1 INVITE\n{extra}Content-Length: 0\n\n"
    )


def ok(method: str = "INVITE", call_id: str = "c1") -> str:
    return f"SIP/2.0 200 OK\nCall-ID: {call_id}\nCSeq: 1 {method}\nContent-Length: 0\n\n"


@dataclass
class Step:
    """One state-machine transition, as the recorder reads it."""

    at: float
    from_state: str
    event_name: str
    to_state: str
    row: int = 1
    ignored: bool = False


@dataclass
class Session:
    """The fields of a session the recorder reads (its SessionView protocol)."""

    id: str
    call_id: str | None
    state: str = "Active"
    history: list[Step] = field(default_factory=list)
    remote_uri: str = "sip:alice@127.0.0.1"
    local_uri: str = "sip:svc@127.0.0.1"
    created_at: float = 0.0
    answered_at: float | None = 0.1
    ended_at: float | None = None
    failure: Any = None
    direction: Any = None
    counters: dict[str, object] = field(default_factory=dict)

    def stats(self) -> dict[str, object]:
        return dict(self.counters)


# -- MOS ---------------------------------------------------------------------------------
def test_the_e_model_rates_a_clean_call_near_4_4_and_loss_lower() -> None:
    assert estimate_mos(0.0) == pytest.approx(4.40, abs=0.01)
    assert estimate_mos(0.01) == pytest.approx(4.32, abs=0.01)
    assert estimate_mos(0.05) == pytest.approx(3.90, abs=0.01)
    assert estimate_mos(0.5) < 2.0
    assert estimate_mos(0.0, jitter_ms=100.0, rtt_ms=400.0) < estimate_mos(0.0)
    # G.107 Annex B's end points.
    assert mos_from_r(0.0) == 1.0 and mos_from_r(100.0) == 4.5
    assert mos_from_r(50.0) == pytest.approx(1 + 1.75 + 7e-6 * 50 * -10 * 50)
    assert r_factor(0.0) == pytest.approx(93.2 - 0.024 * 20.0)


# -- redaction ---------------------------------------------------------------------------
def test_credentials_and_sdes_keys_are_redacted_and_the_body_keeps_its_length() -> None:
    body = "v=0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:SECRETKEYSECRETKEY|2^20|1:32\r\n"
    text = (
        'INVITE sip:x SIP/2.0\r\nAuthorization: Digest username="a", response="SECRETRESP"\r\n'
        "proxy-authorization: Digest response=SECRET2\r\nWWW-Authenticate: Digest nonce=n\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()
    out = redact(text)
    assert b"SECRET" not in out
    assert b"Authorization: <redacted>\r\n" in out and b"proxy-authorization: <redacted>" in out
    assert b"WWW-Authenticate: Digest nonce=n" in out
    assert b"inline:" + b"X" * len("SECRETKEYSECRETKEY") + b"|2^20|1:32" in out
    assert len(out.split(b"\r\n\r\n", 1)[1]) == len(body)
    plain = b"OPTIONS sip:x SIP/2.0\r\nCall-ID: 1\r\n\r\n"
    assert redact(plain) is plain


def test_the_recorder_redacts_unless_secrets_are_shown() -> None:
    secret = invite(extra="Authorization: Digest response=TOPSECRET\n")
    for show in (False, True):
        recorder = ConsoleRecorder(show_secrets=show)
        recorder.message(msg(1.0, Direction.IN, secret))
        record = recorder.observe(Session("s1", "c1"), 1.0)
        assert (b"TOPSECRET" in record.messages[0].data) is show


# -- SVG ---------------------------------------------------------------------------------
def test_the_ladder_has_one_arrow_per_message_on_both_legs() -> None:
    leg_a = [msg(1.0, Direction.IN, invite()), msg(1.1, Direction.OUT, ok())]
    other = WireMessage(
        1.05, Direction.OUT, "tcp", US, ("127.0.0.9", 5070), b"INVITE x SIP/2.0\r\n\r\n", "c2"
    )
    svg = ladder_svg([leg_a, [other]])
    assert svg.count('<g class="arrow">') == 3
    assert re.findall(r'href="#m(\d+)"', svg) == ["1", "2", "3"]
    # Columns: the first leg's peer, sipd, the other leg's peer.
    names = re.findall(r'font-weight="bold">([^<]+)<', svg)
    assert names == ["127.0.0.1:5062", "sipd", "127.0.0.9:5070"]
    assert describe(ok("BYE").replace("\n", "\r\n").encode()) == "200 OK (BYE)"
    assert "+0.100s" in svg


def test_a_graph_draws_its_points_and_says_when_there_are_none() -> None:
    assert "no media samples" in line_graph_svg([], title="Jitter")
    svg = line_graph_svg([(0.0, 1.0), (1.0, 3.0), (2.0, 2.0)], title="Jitter", unit=" ms")
    assert len(re.search(r'points="([^"]+)"', svg).group(1).split()) == 3  # type: ignore[union-attr]


# -- the recorder ------------------------------------------------------------------------
def test_messages_wait_for_their_call_and_samples_rate_each_interval() -> None:
    recorder = ConsoleRecorder()
    recorder.message(msg(1.0, Direction.IN, invite()))
    session = Session("s1", "c1", counters={"packets_received": 0, "packets_lost": 0})
    recorder.observe(session, 1.0)
    recorder.message(msg(1.1, Direction.OUT, ok()))
    session.counters = {
        "packets_received": 90,
        "packets_lost": 10,
        "jitter_ms": 4.0,
        "codec": "PCMU",
    }
    record = recorder.observe(session, 2.0)
    assert [m.time for m in record.messages] == [1.0, 1.1]
    assert record.loss == pytest.approx(0.1) and record.codec == "PCMU"
    assert record.samples[-1].mos == estimate_mos(0.1, 4.0)
    session.history = [
        Step(0.0, "Idle", "IncomingCall", "Incoming"),
        Step(0.1, "Incoming", "Accept", "Active"),
    ]
    session.ended_at, session.state = 3.0, "Terminated"
    recorder.ended(session, 3.0)
    recorder.message(msg(3.1, Direction.IN, "ACK sip:x SIP/2.0\nCall-ID: c1\nCSeq: 2 ACK\n\n"))
    assert len(record.messages) == 3 and record.outcome == "completed" and record.status == 200
    assert record.cdr["path"] == ["Idle", "Incoming", "Active"]
    page = call_page(recorder, record, 4.0)
    assert page.count('<g class="arrow">') == 3 and "IncomingCall" in page
    assert '"outcome": "completed"' in calls_json(recorder, 4.0, outcome="completed")
    assert '"recent": []' in calls_json(recorder, 4.0, outcome="failed")
    assert '"recent": []' in calls_json(recorder, 4.0, number="bob")


def test_ten_thousand_calls_leave_only_recent_calls_held() -> None:
    recorder = ConsoleRecorder(recent_calls=25, max_messages=5)
    for n in range(10_000):
        call_id = f"call-{n}"
        for k in range(8):  # more than max_messages: the earliest are dropped
            recorder.message(msg(n + k / 10, Direction.IN, invite(call_id), call_id))
        session = Session(f"s{n}", call_id, ended_at=n + 1.0, state="Terminated")
        recorder.observe(session, float(n))
        recorder.ended(session, n + 1.0)
        recorder.message(msg(n + 1.1, Direction.IN, invite(call_id), call_id))  # late
    assert recorder.held() == 25 and len(recorder.recent()) == 25
    assert recorder.waiting() <= 256
    assert all(len(r.messages) == 5 for r in recorder.recent())
    assert recorder.recent()[0].id == "s9999" and recorder.get("s0") is None


def test_linked_legs_are_shown_together_and_unlinked_when_forgotten() -> None:
    recorder = ConsoleRecorder(recent_calls=1)
    a, b = Session("a", "ca"), Session("b", "cb")
    recorder.observe(a, 0.0)
    recorder.observe(b, 0.0)
    recorder.link("a", "b")
    assert [r.id for r in recorder.legs(recorder.get("a"))] == ["a", "b"]  # type: ignore[arg-type]
    recorder.ended(a, 1.0)
    recorder.ended(b, 1.0)  # pushes "a" out
    assert recorder.get("a") is None and recorder.get("b").linked == []  # type: ignore[union-attr]


def test_the_call_id_of_an_outgoing_message_is_read_from_its_bytes() -> None:
    assert call_id_of(b"BYE sip:x SIP/2.0\r\nVia: x\r\ni: abc@h \r\n\r\nCall-ID: no") == "abc@h"
    assert call_id_of(b"SIP/2.0 200 OK\r\ncall-id:Z\r\n\r\n") == "Z"
    assert call_id_of(b"OPTIONS sip:x SIP/2.0\r\n\r\n") == ""


def test_rtp_before_the_call_is_seen_joins_it_and_late_packets_of_a_reused_port_do_not() -> None:
    recorder = ConsoleRecorder()
    local, peer = ("127.0.0.1", 20000), ("127.0.0.1", 30000)
    recorder.rtp(False, b"\x80early", local, peer, 1.0)
    recorder.rtp(True, b"\x80rtcp", ("127.0.0.1", 20001), peer, 1.1)  # RTCP: port + 1
    session = Session("s1", "c1", created_at=0.5, counters={"local_port": 20000})
    record = recorder.observe(session, 2.0)
    recorder.rtp(True, b"\x80on", local, peer, 2.1)
    assert [p.data for p in record.rtp] == [b"\x80early", b"\x80rtcp", b"\x80on"]
    session.ended_at = 3.0
    recorder.ended(session, 3.0)
    recorder.rtp(False, b"\x80in-flight", local, peer, 3.2)
    recorder.rtp(False, b"\x80next-call", local, peer, 5.0)
    assert [p.data for p in record.rtp][-1] == b"\x80in-flight"
    nxt = recorder.observe(Session("s2", "c2", created_at=4.9, counters={"local_port": 20000}), 5.5)
    assert [p.data for p in nxt.rtp] == [b"\x80next-call"]


def test_console_and_hep_settings_are_checked_with_file_line_and_key() -> None:
    from sipd.daemon.config import parse_config
    from sipd.errors import ConfigError

    cfg = parse_config(
        "http:\n  listen: 0.0.0.0:8080\nconsole:\n  users: {ops: pw}\n  recent_calls: 5\n"
        "hep:\n  address: 127.0.0.1:9060\n  node_id: 9\n",
        "s.yaml",
    )
    assert cfg.console.users == {"ops": "pw"} and cfg.console.recent_calls == 5
    assert cfg.hep is not None and cfg.hep.address == ("127.0.0.1", 9060) and cfg.hep.node_id == 9
    assert parse_config("").console.enabled and parse_config("").hep is None
    bad = {
        "http:\n  listen: 0.0.0.0:8080\n": "s.yaml:2: http.listen: the HTTP port is bound to 0.0",
        "console:\n  token: short\n": "s.yaml:2: console.token: use at least 16",
        "console:\n  recent_calls: 0\n": "s.yaml:2: console.recent_calls: must be at least 1",
        "console:\n  colour: red\n": "s.yaml:2: console.colour: unknown key",
        "hep:\n  address: homer:9060\n": "s.yaml:2: hep.address: 'homer:9060' must be IP:PORT",
    }
    for text, message in bad.items():
        with pytest.raises(ConfigError) as caught:
            parse_config(text, "s.yaml")
        assert str(caught.value).startswith(message), str(caught.value)
    # Loopback, or the console off, needs no credentials.
    assert parse_config("http:\n  listen: '[::1]:8080'\n").console.token is None
    assert not parse_config(
        "http: {listen: 0.0.0.0:80}\nconsole: {enabled: false}\n"
    ).console.enabled
