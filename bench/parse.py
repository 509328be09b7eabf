"""SIP message parse/serialise throughput: sipd against Twisted's MessagesParser.

Run: ``.venv/bin/python bench/parse.py`` (``--budget 0.2`` for a quick run).
The messages are a realistic call: INVITE with SDP, 100 Trying, 180 Ringing,
200 OK with SDP, ACK, BYE, and a REGISTER carrying Digest credentials.

"sipd parse" is what a UA pays per datagram: ``parse_message`` plus reading
the top Via branch, CSeq, Call-ID and the From and To tags. "twisted parse"
is ``MessagesParser`` alone, re-created per datagram with ``dataReceived``
then ``dataDone``, so the comparison favours Twisted. "serialise" builds the
bytes of a message that was not parsed from bytes (the canonical path), with
``to_bytes()`` for sipd and ``toString()`` for Twisted.

Each comparison alternates sipd and Twisted batches for about ``--budget``
seconds (default 1 s; 2 s for the INVITE parse pair), so each side gets about
``--budget``/2 and the whole run stays under 30 s. Parsing cycles through
256 copies of each message with distinct branch, tags and Call-ID. The
last line is machine-readable:
``RESULT parse_invite_per_s=<N> ratio_vs_twisted=<R> mix_ratio_vs_twisted=<M>``,
where ``<R>`` is the INVITE parse ratio and ``<M>`` the parse ratio over the
whole message mix (one of each message per round), sipd over Twisted.
"""

from __future__ import annotations

import argparse
import itertools
import re
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

from sipd.sip.headers import Headers
from sipd.sip.message import Request, Response, parse_message

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from twisted.protocols import sip as tsip


def _crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


_SDP = _crlf(
    "v=0\n"
    "o=alice 2890844526 2890844526 IN IP4 192.0.2.10\n"
    "s=-\n"
    "c=IN IP4 192.0.2.10\n"
    "t=0 0\n"
    "m=audio 49170 RTP/AVP 0 8 101\n"
    "a=rtpmap:0 PCMU/8000\n"
    "a=rtpmap:8 PCMA/8000\n"
    "a=rtpmap:101 telephone-event/8000\n"
    "a=fmtp:101 0-16\n"
    "a=ptime:20\n"
    "a=sendrecv\n"
)

_VIA = "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\n"
_VIA_RESP = (
    "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport=5060;received=192.0.2.10\n"
)
_DIALOG = (
    'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774\n'
    "To: <sip:bob@biloxi.example.com>{to_tag}\n"
    "Call-ID: a84b4c76e66710@pc33.atlanta.example.com\n"
)


def _msg(start: str, via: str, to_tag: str, cseq: str, extra: str, body: bytes) -> bytes:
    head = (
        f"{start}\n{via}Max-Forwards: 70\n"
        + _DIALOG.format(to_tag=to_tag)
        + f"CSeq: {cseq}\n{extra}Content-Length: {len(body)}\n\n"
    )
    return _crlf(head) + body


_CONTACT = "Contact: <sip:alice@192.0.2.10:5060;transport=udp>\n"
_UA = "User-Agent: sipd-bench/1.0\nAllow: INVITE, ACK, CANCEL, BYE, OPTIONS\n"

MESSAGES: dict[str, bytes] = {
    "INVITE+SDP": _msg(
        "INVITE sip:bob@biloxi.example.com SIP/2.0",
        _VIA,
        "",
        "314159 INVITE",
        _CONTACT + _UA + "Supported: timer, 100rel\nContent-Type: application/sdp\n",
        _SDP,
    ),
    "100 Trying": _msg("SIP/2.0 100 Trying", _VIA_RESP, "", "314159 INVITE", "", b""),
    "180 Ringing": _msg(
        "SIP/2.0 180 Ringing",
        _VIA_RESP,
        ";tag=a6c85cf",
        "314159 INVITE",
        "Contact: <sip:bob@192.0.2.20:5060>\n",
        b"",
    ),
    "200 OK+SDP": _msg(
        "SIP/2.0 200 OK",
        _VIA_RESP,
        ";tag=a6c85cf",
        "314159 INVITE",
        "Contact: <sip:bob@192.0.2.20:5060>\n" + _UA + "Content-Type: application/sdp\n",
        _SDP.replace(b"alice", b"bob").replace(b"192.0.2.10", b"192.0.2.20"),
    ),
    "ACK": _msg(
        "ACK sip:bob@192.0.2.20:5060 SIP/2.0",
        _VIA.replace("776asdhds", "8a8sdg87s"),
        ";tag=a6c85cf",
        "314159 ACK",
        "",
        b"",
    ),
    "BYE": _msg(
        "BYE sip:bob@192.0.2.20:5060 SIP/2.0",
        _VIA.replace("776asdhds", "4b43c2ff8.1"),
        ";tag=a6c85cf",
        "314160 BYE",
        _UA,
        b"",
    ),
    "REGISTER+Digest": _crlf(
        "REGISTER sip:registrar.biloxi.example.com SIP/2.0\n"
        "Via: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bKnashds7;rport\n"
        "Max-Forwards: 70\n"
        "From: Bob <sip:bob@biloxi.example.com>;tag=a73kszlfl\n"
        "To: Bob <sip:bob@biloxi.example.com>\n"
        "Call-ID: 1j9FpLxk3uxtm8tn@192.0.2.20\n"
        "CSeq: 2 REGISTER\n"
        "Contact: <sip:bob@192.0.2.20:5060>;expires=3600\n"
        'Authorization: Digest username="bob", realm="biloxi.example.com", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="sip:registrar.biloxi.example.com", '
        'response="245f23415f11432b3434341c022", algorithm=MD5, '
        'cnonce="0a4f113b", qop=auth, nc=00000001, opaque="5ccc069c403ebaf9f0171e9517f40e41"\n'
        "User-Agent: sipd-bench/1.0\n"
        "Content-Length: 0\n"
        "\n"
    ),
}


def _batch_rate(fn: Callable[[], object], batch: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    for _ in range(batch):
        fn()
    elapsed = time.perf_counter() - t0
    return (batch / elapsed if elapsed > 0 else 0.0), elapsed


def compare(
    ours: Callable[[], object], ref: Callable[[], object], budget: float
) -> tuple[float, float]:
    """Calls per second of ``ours`` and ``ref``, measured in alternating batches.

    Alternating ~10 ms batches for about ``budget`` seconds in all, and keeping
    each side's best batch, makes the ratio fair on a machine whose load
    changes during the run.
    """
    ours()  # warm-up
    ref()
    batches = [16, 16]
    best = [0.0, 0.0]
    deadline = time.perf_counter() + budget
    while True:
        for i, fn in enumerate((ours, ref)):
            r, elapsed = _batch_rate(fn, batches[i])
            best[i] = max(best[i], r)
            if elapsed < 0.01:
                batches[i] *= 2
        if time.perf_counter() >= deadline:
            return best[0], best[1]


VARIANTS = 256


def variants(data: bytes, count: int = VARIANTS) -> list[bytes]:
    """Copies of ``data`` with a fresh branch, tags and Call-ID each, as on the wire.

    Real traffic never repeats these, so the parsers meet them as new text
    every time and no cache keyed on a whole header value can flatter them.
    """
    out = []
    for i in range(count):
        v = re.sub(rb"branch=z9hG4bK[^;\r]*", b"branch=z9hG4bK%08x.%d" % (i * 7919, i), data)
        v = re.sub(rb"tag=([^;\r]*)", lambda m, i=i: m.group(0) + b"%x" % i, v)
        v = re.sub(rb"Call-ID: ([^@\r]*)", lambda m, i=i: m.group(0) + b"%04x" % i, v)
        out.append(v)
    return out


def sipd_parse(data: bytes) -> Callable[[], object]:
    """``parse_message`` plus the reads a UA does on every message."""
    nxt = itertools.cycle(variants(data)).__next__

    def run() -> object:
        msg = parse_message(nxt())
        return (msg.top_via.branch, msg.cseq, msg.call_id, msg.from_.tag, msg.to.tag)

    return run


def sipd_serialise(data: bytes) -> Callable[[], object]:
    """Canonical serialisation of a message built in code (no raw bytes to reuse)."""
    parsed = parse_message(data)
    items = list(parsed.headers)

    def run() -> object:
        msg: Request | Response
        if isinstance(parsed, Request):
            msg = Request(parsed.method, parsed.uri, Headers(items), parsed.body)
        else:
            msg = Response(parsed.status, parsed.reason, Headers(items), parsed.body)
        return msg.to_bytes()

    return run


def twisted_parse(data: bytes) -> Callable[[], object]:
    """Twisted's parser, re-created per datagram as its UDP transport would need."""
    out: list[Any] = []
    nxt = itertools.cycle(variants(data)).__next__

    def run() -> object:
        parser = tsip.MessagesParser(out.append)
        parser.dataReceived(nxt())
        parser.dataDone()
        msg = out.pop()
        return msg

    run()  # check the message parses at all
    return run


def twisted_serialise(data: bytes) -> Callable[[], object]:
    """``toString()`` of a Twisted message (it caches nothing)."""
    out: list[Any] = []
    parser = tsip.MessagesParser(out.append)
    parser.dataReceived(data)
    parser.dataDone()
    msg = out.pop()
    return lambda: msg.toString()


def _mix(makers: list[Callable[[], object]]) -> Callable[[], object]:
    def run() -> object:
        for fn in makers:
            fn()
        return None

    return run


def _row(label: str, ours: float, ref: float) -> str:
    return (
        f"  {label:<16} sipd {ours:10,.0f}/s {1e6 / ours:7.1f} µs   "
        f"twisted {ref:10,.0f}/s {1e6 / ref:7.1f} µs   ratio {ours / ref:5.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--budget", type=float, default=1.0, help="seconds per sipd/twisted comparison")
    args = ap.parse_args(argv)
    budget: float = args.budget

    # Sanity: every message parses in both stacks and round-trips in sipd.
    for name, data in MESSAGES.items():
        msg = parse_message(data)
        assert msg.to_bytes() == data, name
        assert len({parse_message(v).top_via.branch for v in variants(data)}) == VARIANTS
        assert parse_message(sipd_serialise(data)()).to_bytes() == sipd_serialise(data)(), name

    results: dict[str, tuple[float, float]] = {}
    print("parse (sipd: parse_message + Via branch, CSeq, Call-ID, From/To tags):")
    for name, data in MESSAGES.items():
        b = budget * 2 if name == "INVITE+SDP" else budget
        ours, ref = compare(sipd_parse(data), twisted_parse(data), b)
        results[name] = (ours, ref)
        print(_row(name, ours, ref))
    n = len(MESSAGES)
    ours_mix, ref_mix = compare(
        _mix([sipd_parse(d) for d in MESSAGES.values()]),
        _mix([twisted_parse(d) for d in MESSAGES.values()]),
        budget,
    )
    ours_mix, ref_mix = ours_mix * n, ref_mix * n
    print(_row("overall mix", ours_mix, ref_mix))
    parse_mix_ratio = ours_mix / ref_mix

    print("serialise (message built in code -> bytes):")
    for name, data in MESSAGES.items():
        print(_row(name, *compare(sipd_serialise(data), twisted_serialise(data), budget)))
    ours_mix, ref_mix = compare(
        _mix([sipd_serialise(d) for d in MESSAGES.values()]),
        _mix([twisted_serialise(d) for d in MESSAGES.values()]),
        budget,
    )
    ours_mix, ref_mix = ours_mix * n, ref_mix * n
    print(_row("overall mix", ours_mix, ref_mix))

    invite, ref_invite = results["INVITE+SDP"]
    print(
        f"RESULT parse_invite_per_s={invite:.0f} ratio_vs_twisted={invite / ref_invite:.2f}"
        f" mix_ratio_vs_twisted={parse_mix_ratio:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
