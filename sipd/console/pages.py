# ruff: noqa: E501  (inline HTML, CSS and script read better unwrapped)
"""The console's HTML pages and JSON, rendered from a :class:`ConsoleRecorder`.

Plain HTML with inline CSS and a few lines of inline script (the call list
refreshes itself with ``fetch('/api/calls')``); nothing is loaded from
elsewhere, so the console works on a machine with no Internet access.
"""

from __future__ import annotations

import datetime
import html
import json
from urllib.parse import quote

from sipd.console.recorder import CallRecord, ConsoleRecorder
from sipd.console.svg import describe, ladder_svg, line_graph_svg

__all__ = ["call_page", "calls_json", "console_page"]

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:16px;color:#222;max-width:1400px}
h1{font-size:20px;margin:0 0 8px}h2{font-size:16px;margin:18px 0 6px}
table{border-collapse:collapse;width:100%}th,td{padding:4px 8px;border-bottom:1px solid #e3e3e3;
text-align:left;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.calls{table-layout:fixed}.calls th:nth-child(-n+2){width:19%}.calls th{text-overflow:clip}th{background:#f2f2f2}tr:hover td{background:#f7fbff}
.filters{margin:8px 0}.filters input,.filters select{font-size:14px;padding:2px 6px}
pre{background:#f6f6f6;padding:8px;overflow-x:auto;font-size:12px}
.muted{color:#777}.bad{color:#b71c1c}.ok{color:#1b5e20}
details{margin:2px 0}summary{cursor:pointer;font-family:monospace}
.graphs{display:flex;flex-wrap:wrap;gap:12px}.ladderbox{overflow-x:auto;border:1px solid #ddd}
"""


def _when(t: float | None) -> str:
    if t is None:
        return ""
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def calls_json(recorder: ConsoleRecorder, now: float, number: str = "", outcome: str = "") -> str:
    """``GET /api/calls``: the live calls and the recent ended ones, filtered."""

    def keep(row: dict[str, object]) -> bool:
        if number and number not in f"{row['caller']} {row['callee']}":
            return False
        if outcome == "completed":
            return row["outcome"] == "completed"
        if outcome == "failed":
            return row["outcome"] not in (None, "completed")
        return True

    live = [r.summary(now) for r in recorder.live_calls()]
    recent = [r.summary(now) for r in recorder.recent()]
    return json.dumps(
        {
            "now": now,
            "live": [r for r in live if keep(r)],
            "recent": [r for r in recent if keep(r)],
            "recent_limit": recorder.recent_calls,
            "held": recorder.held(),
            "waiting": recorder.waiting(),
        }
    )


_LIST_SCRIPT = """
const tok=new URLSearchParams(location.search).get('token');
const q=tok?('token='+encodeURIComponent(tok)):'';
function esc(s){return String(s??'').replace(/[&<>"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));}
function row(c){const href='calls/'+encodeURIComponent(c.id)+(q?'?'+q:'');
const out=c.outcome?('<span class="'+(c.outcome==='completed'?'ok':'bad')+'">'+esc(c.outcome)+(c.status?' '+c.status:'')+'</span>'):'';
return '<tr class="call" data-id="'+esc(c.id)+'"><td title="'+esc(c.caller)+'"><a href="'+href+'">'+esc(c.caller)+'</a></td><td title="'+esc(c.callee)+'">'+esc(c.callee)+
'</td><td>'+esc(c.state)+'</td><td>'+c.duration.toFixed(1)+' s</td><td>'+esc(c.codec)+'</td><td>'+esc(c.transport)+
'</td><td>'+(100*c.loss).toFixed(1)+' %</td><td>'+c.jitter_ms.toFixed(1)+' ms</td><td>'+(c.mos??'')+'</td><td>'+esc(c.handler)+'</td><td>'+out+'</td></tr>';}
async function refresh(){const p=new URLSearchParams();const n=document.getElementById('number').value;
const o=document.getElementById('outcome').value;if(n)p.set('number',n);if(o)p.set('outcome',o);if(tok)p.set('token',tok);
try{const r=await fetch('api/calls?'+p.toString(),{cache:'no-store'});if(!r.ok)return;const d=await r.json();
document.getElementById('live').innerHTML=d.live.map(row).join('')||'<tr><td colspan="11" class="muted">no live calls</td></tr>';
document.getElementById('recent').innerHTML=d.recent.map(row).join('')||'<tr><td colspan="11" class="muted">none</td></tr>';
document.getElementById('counts').textContent=d.live.length+' live, '+d.recent.length+' recent (up to '+d.recent_limit+' kept)';
document.body.dataset.refreshed=String(Date.now());}catch(e){}}
document.getElementById('number').addEventListener('input',refresh);
document.getElementById('outcome').addEventListener('change',refresh);
refresh();setInterval(refresh,1000);
"""

_HEAD = (
    "<tr><th>Caller</th><th>Callee</th><th>State</th><th>Duration</th><th>Codec</th>"
    "<th>Transport</th><th>Loss</th><th>Jitter</th><th>MOS</th><th>Handler</th>"
    "<th>Outcome</th></tr>"
)


def console_page(title: str) -> str:
    """``GET /``: the call list, filled and refreshed by the inline script."""
    return f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<title>{html.escape(title)} console</title><style>{_STYLE}</style></head><body>
<h1>{html.escape(title)}: calls</h1>
<div class="filters">Number <input id="number" placeholder="caller or callee contains">
Outcome <select id="outcome"><option value="">any</option><option value="completed">completed</option>
<option value="failed">failed</option></select> <span id="counts" class="muted"></span>
<span class="muted">· <a href="status">/status</a> · <a href="metrics">/metrics</a></span></div>
<h2>Live calls</h2><table class="calls"><thead>{_HEAD}</thead><tbody id="live"></tbody></table>
<h2>Recent ended calls</h2><table class="calls"><thead>{_HEAD}</thead><tbody id="recent"></tbody></table>
<script>{_LIST_SCRIPT}</script></body></html>"""


_CALL_SCRIPT = """
function openHash(){const id=location.hash.slice(1);const d=id&&document.getElementById(id);
if(d&&d.tagName==='DETAILS'){d.open=true;d.scrollIntoView();}}
window.addEventListener('hashchange',openHash);openHash();
"""


def call_page(recorder: ConsoleRecorder, record: CallRecord, now: float, token: str = "") -> str:
    """``GET /calls/<id>``: ladder, state path, quality graphs, CDR, messages."""
    legs = recorder.legs(record)
    ladder = ladder_svg([list(leg.messages) for leg in legs])
    messages = sorted((m for leg in legs for m in leg.messages), key=lambda m: m.time)
    start = messages[0].time if messages else record.started_at
    suffix = f"?token={quote(token)}" if token else ""
    details = []
    for n, m in enumerate(messages, start=1):
        arrow = "→" if m.direction.value == "out" else "←"
        peer = f"{m.remote[0]}:{m.remote[1]}"
        details.append(
            f'<details id="m{n}"><summary>#{n} +{m.time - start:.3f}s {arrow} {html.escape(peer)} '
            f"{m.transport.upper()} {html.escape(describe(m.data))}</summary><pre>"
            f"{html.escape(m.data.decode('utf-8', 'replace'))}</pre></details>"
        )
    steps = "".join(
        f"<tr><td>{_when(s.at)}</td><td>+{s.at - record.started_at:.3f}s</td>"
        f"<td>{html.escape(s.from_state)}</td><td>{html.escape(s.event)}</td>"
        f"<td>{html.escape(s.to_state)}</td><td>{s.row}</td></tr>"
        for s in record.steps
    )
    base = record.samples[0].at if record.samples else record.started_at
    loss = [(s.at - base, 100 * s.loss) for s in record.samples]
    jitter = [(s.at - base, s.jitter_ms) for s in record.samples]
    mos = [(s.at - base, s.mos) for s in record.samples]
    graphs = (
        line_graph_svg(loss, title="Packet loss", unit="%", y_max=max([5.0, *(v for _, v in loss)]))
        + line_graph_svg(jitter, title="Jitter", unit=" ms")
        + line_graph_svg(mos, title="Estimated MOS (G.107 E-model)", y_min=1.0, y_max=4.5)
    )
    cdr = record.cdr or record.summary(now)
    cdr_rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in cdr.items()
    )
    linked = "".join(
        f' <a href="{quote(leg.id)}{suffix}">{html.escape(leg.caller)} → {html.escape(leg.callee)}</a>'
        for leg in legs[1:]
    )
    dropped = (
        f'<p class="bad">{record.dropped_messages} earlier message(s) not kept '
        f"(at most {recorder.max_messages} per call).</p>"
        if record.dropped_messages
        else ""
    )
    return f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<title>Call {html.escape(record.call_id or record.id)}</title><style>{_STYLE}</style></head><body>
<p><a href="../{suffix}">← all calls</a> · <a href="{quote(record.id)}.pcap{suffix}">download pcap</a></p>
<h1>{html.escape(record.caller)} → {html.escape(record.callee)}</h1>
<p>Call-ID <code>{html.escape(record.call_id)}</code> · {html.escape(record.direction)} ·
state <b>{html.escape(record.state)}</b> · {html.escape(record.outcome or "live")} ·
{record.duration(now):.1f} s · {html.escape(record.codec or "no codec")} ·
{html.escape((record.transport or "udp").upper())} · handler {html.escape(record.handler)}
{("· linked:" + linked) if linked else ""}</p>
<h2>SIP ladder ({len(messages)} messages)</h2>{dropped}<div class="ladderbox">{ladder}</div>
<h2>Messages</h2>{"".join(details) or '<p class="muted">none recorded</p>'}
<h2>State path</h2><table><thead><tr><th>Time (UTC)</th><th>Since start</th><th>From</th>
<th>Event</th><th>To</th><th>Table row</th></tr></thead><tbody>{steps}</tbody></table>
<h2>Media quality</h2><div class="graphs">{graphs}</div>
<h2>CDR</h2><table class="cdr">{cdr_rows}</table>
<script>{_CALL_SCRIPT}</script></body></html>"""
