"""Server-side SVG: the SIP ladder diagram and the quality graphs of a call page.

Drawn here rather than in the browser so the console needs no script
library (no CDN: it works offline) and a test can count the arrows in the
HTML it gets. Every arrow is a ``<g class="arrow">`` linking to the full
message below the diagram (``#m<n>``), labelled with the method or status
and the time since the call's first message.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

from sipd.capture.records import Direction, WireMessage

__all__ = ["describe", "ladder_svg", "line_graph_svg"]

_CSEQ = re.compile(rb"\r\n(?:cseq)[ \t]*:[ \t]*\d+[ \t]+([A-Za-z]+)", re.IGNORECASE)


def describe(data: bytes) -> str:
    """An arrow's label: ``INVITE``, or ``200 OK (INVITE)`` for a response."""
    line = data.split(b"\r\n", 1)[0].decode("utf-8", "replace")
    if line.startswith("SIP/2.0 "):
        found = _CSEQ.search(data)
        method = f" ({found.group(1).decode('ascii')})" if found else ""
        return line[8:].strip()[:40] + method
    return line.split(" ", 1)[0][:20]


def _column(addr: tuple[str, int]) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def ladder_svg(legs: Sequence[Sequence[WireMessage]], *, col_width: int = 230) -> str:
    """The ladder of one call: ``legs[0]`` its messages, the others its linked legs'.

    Columns: the first leg's peers on the left, sipd in the middle, the
    other legs' peers on the right, in order of first appearance.
    """
    left: list[str] = []
    right: list[str] = []
    for index, leg in enumerate(legs):
        side = left if index == 0 else right
        for message in leg:
            name = _column(message.remote)
            if name not in left and name not in right:
                side.append(name)
    columns = [*left, "sipd", *right]
    where = {name: i for i, name in enumerate(columns)}
    messages = sorted((m for leg in legs for m in leg), key=lambda m: m.time)
    start = messages[0].time if messages else 0.0
    margin, top, row = 90, 44, 30
    width = margin + col_width * len(columns)
    height = top + row * (len(messages) + 1)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="ladder" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" '
        'font-size="12">'
    ]

    def x(name: str) -> int:
        return margin + col_width * where[name] + col_width // 2

    for name in columns:
        out.append(
            f'<text x="{x(name)}" y="18" text-anchor="middle" font-weight="bold">'
            f"{html.escape(name)}</text>"
            f'<line x1="{x(name)}" y1="26" x2="{x(name)}" y2="{height - 6}" '
            'stroke="#999" stroke-dasharray="4 3"/>'
        )
    for n, message in enumerate(messages, start=1):
        y = top + row * n
        peer, us = x(_column(message.remote)), x("sipd")
        x1, x2 = (peer, us) if message.direction is Direction.IN else (us, peer)
        tip = -7 if x2 > x1 else 7
        label = html.escape(describe(message.data))
        colour = "#1565c0" if message.data.startswith(b"SIP/2.0") else "#2e7d32"
        out.append(
            f'<g class="arrow"><a href="#m{n}"><title>{label} at +{message.time - start:.3f}s'
            f"</title>"
            f'<text x="6" y="{y + 4}" fill="#555">+{message.time - start:.3f}s</text>'
            f'<line x1="{x1}" y1="{y}" x2="{x2}" y2="{y}" stroke="{colour}" stroke-width="1.6"/>'
            f'<path d="M{x2} {y} l{tip} -4 l0 8 z" fill="{colour}"/>'
            f'<text x="{(x1 + x2) // 2}" y="{y - 5}" text-anchor="middle" fill="{colour}">'
            f"{label}</text></a></g>"
        )
    out.append("</svg>")
    return "".join(out)


def line_graph_svg(
    points: Sequence[tuple[float, float]],
    *,
    title: str,
    unit: str = "",
    y_max: float | None = None,
    y_min: float = 0.0,
    width: int = 560,
    height: int = 160,
) -> str:
    """A small line graph of ``(t, value)`` points (t in seconds since the call began)."""
    left, right, top, bottom = 48, 12, 22, 26
    inner_w, inner_h = width - left - right, height - top - bottom
    values = [v for _, v in points]
    high = y_max if y_max is not None else max([*values, y_min + 1e-9]) * 1.15
    low = y_min
    span_t = max((points[-1][0] if points else 0.0), 1.0)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="graph" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" '
        'font-size="11">',
        f'<text x="{left}" y="14" font-weight="bold">{html.escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{inner_w}" height="{inner_h}" fill="#fafafa" '
        'stroke="#ccc"/>',
        f'<text x="{left - 4}" y="{top + 8}" text-anchor="end">{high:.3g}{unit}</text>',
        f'<text x="{left - 4}" y="{top + inner_h}" text-anchor="end">{low:.3g}{unit}</text>',
        f'<text x="{left}" y="{height - 8}">0 s</text>',
        f'<text x="{left + inner_w}" y="{height - 8}" text-anchor="end">{span_t:.0f} s</text>',
    ]
    if not points:
        out.append(
            f'<text x="{left + inner_w // 2}" y="{top + inner_h // 2}" text-anchor="middle" '
            'fill="#888">no media samples</text>'
        )
    else:
        coords = []
        for t, v in points:
            px = left + inner_w * (t / span_t)
            frac = 0.0 if high == low else (min(max(v, low), high) - low) / (high - low)
            coords.append(f"{px:.1f},{top + inner_h * (1 - frac):.1f}")
        out.append(
            f'<polyline class="series" fill="none" stroke="#c62828" stroke-width="1.5" '
            f'points="{" ".join(coords)}"/>'
        )
    out.append("</svg>")
    return "".join(out)
