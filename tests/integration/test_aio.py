"""``sipd.aio`` as an asyncio program uses it: each script runs under ``asyncio.run()``
in its own process (pytest's process already has pytest-twisted's reactor).

* two peers exchange tones and both record; the test checks each WAV's
  dominant frequency with its own FFT;
* a plain asyncio HTTP server (``asyncio.start_server``) places a call from
  its request handler, the way a FastAPI endpoint would;
* a program that installed Twisted's default reactor first gets
  :class:`sipd.aio.WrongReactorError` with what to do, at once (no hang).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from sipd.media.wav import read_wav

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60


def run_script(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "main.py"
    script.write_text(textwrap.dedent(body))
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    return proc


def peak_hz(samples: np.ndarray) -> float:
    x = samples.astype(np.float64)
    x = (x - x.mean()) * np.hanning(len(x))
    spectrum = np.abs(np.fft.rfft(x, 1 << 16))
    spectrum[0] = 0
    return float(np.argmax(spectrum)) * 8000 / (1 << 16)


TONES = """
import asyncio, sys
from pathlib import Path
from sipd import aio
from sipd.media.tones import ToneGenerator

out = Path(sys.argv[1])

async def send_tone(call, hz, seconds):
    gen = ToneGenerator(hz)
    for _ in range(int(seconds * 50)):
        await call.send_audio(gen.next_frame().samples)

async def main():
    alice = await aio.SimplePeer.create("alice", 0)
    bob = await aio.SimplePeer.create("bob", 0)
    call = await alice.call(bob.uri)
    incoming = await bob.wait_for_incoming()
    print("incoming from", incoming.caller)
    answered = await incoming.accept()
    await call.wait_for_answer()
    alice_rec = call.record_wav(out / "alice.wav")
    bob_rec = answered.record_wav(out / "bob.wav")
    await asyncio.gather(send_tone(call, 440, 1.5), send_tone(answered, 1000, 1.5))
    frame = await call.recv_audio()
    print("frame", type(frame).__name__, frame.dtype, len(frame))
    await call.hangup()
    await asyncio.gather(alice_rec, bob_rec)
    await answered.wait_for_end()
    await alice.close()
    await bob.close()
    print("done", call.state.name)

asyncio.run(main())
"""


def test_two_peers_exchange_tones_under_asyncio_run(tmp_path: Path) -> None:
    proc = run_script(tmp_path, TONES)
    report = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, report
    assert "frame ndarray int16 160" in proc.stdout, report
    assert "done TERMINATED" in proc.stdout, report
    alice = read_wav(tmp_path / "alice.wav")
    bob = read_wav(tmp_path / "bob.wav")
    assert len(alice) > 8000 and len(bob) > 8000, report
    assert abs(peak_hz(alice) - 1000) < 15, (peak_hz(alice), report)
    assert abs(peak_hz(bob) - 440) < 15, (peak_hz(bob), report)


HTTP_APP = """
import asyncio, sys
from sipd import aio

async def main():
    bob = await aio.SimplePeer.create("bob", 0)
    alice = await aio.SimplePeer.create("alice", 0)
    answered = []

    async def answer_all():
        while True:
            incoming = await bob.wait_for_incoming()
            answered.append(await incoming.accept())

    answering = asyncio.create_task(answer_all())

    async def handle(reader, writer):
        # What a FastAPI endpoint does: place a call from the request handler.
        request = (await reader.readline()).decode()
        while (await reader.readline()) not in (b"\\r\\n", b""):
            pass
        target = request.split()[1].removeprefix("/call/")
        call = await alice.call(f"sip:{target}@127.0.0.1:{bob.port}")
        await call.wait_for_answer()
        body = f"{call.state.name} {call.remote_party}".encode()
        writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(body) + body)
        await writer.drain()
        writer.close()
        await call.hangup()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /call/bob HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
    await writer.drain()
    reply = (await asyncio.wait_for(reader.read(), 10)).decode()
    print("reply:", reply.splitlines()[0], "|", reply.split("\\r\\n\\r\\n", 1)[1])
    server.close()
    await server.wait_closed()
    await answered[0].wait_for_end()
    answering.cancel()
    await alice.close()
    await bob.close()

asyncio.run(main())
"""


def test_a_plain_asyncio_http_handler_places_a_call(tmp_path: Path) -> None:
    proc = run_script(tmp_path, HTTP_APP)
    report = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, report
    assert "reply: HTTP/1.1 200 OK | ACTIVE sip:bob@127.0.0.1" in proc.stdout, report


STREAM = """
import asyncio, json
from sipd import aio
from sipd.media.tones import ToneGenerator, dominant_frequency
import numpy as np

async def main():
    # An echo bot on the same loop (autobahn's Twisted server on the asyncio reactor).
    from autobahn.twisted.websocket import WebSocketServerProtocol, WebSocketServerFactory
    class Echo(WebSocketServerProtocol):
        def onMessage(self, payload, isBinary):
            m = json.loads(payload)
            if m["event"] == "media":
                media = {"payload": m["media"]["payload"]}
                reply = {"event": "media", "streamSid": m["streamSid"], "media": media}
                self.sendMessage(json.dumps(reply).encode())
    a = await aio.SimplePeer.create("alice", 0)
    from twisted.internet import reactor
    f = WebSocketServerFactory(); f.protocol = Echo
    server = reactor.listenTCP(0, f, interface="127.0.0.1")
    port = server.getHost().port
    b = await aio.SimplePeer.create("bob", 0)
    call = await a.call(b.uri)
    inc = await b.wait_for_incoming()
    bc = await inc.accept()
    await call.wait_for_answer()
    streaming = asyncio.ensure_future(bc.stream(f"ws://127.0.0.1:{port}/"))
    gen = ToneGenerator(800); heard = []
    for _ in range(60):
        await call.send_audio(gen.next_frame().samples)
        while (x := call.try_recv_audio()) is not None: heard.append(x)
    await call.hangup()
    end = await streaming
    loud = [h for h in heard if np.sqrt(np.mean(h.astype(float)**2)) > 1000]
    print("END", end.ended_by, len(loud), dominant_frequency(np.concatenate(loud)))
    await a.close(); await b.close()
    await server.stopListening().asFuture(asyncio.get_running_loop())
asyncio.run(main())
"""


def test_an_asyncio_program_streams_a_call_to_a_bot(tmp_path: Path) -> None:
    """``await call.stream(url)`` under asyncio.run(): the caller hears its tone echoed."""
    proc = run_script(tmp_path, STREAM)
    report = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, report
    fields = proc.stdout.split("END ", 1)[1].split()
    assert fields[0] == "caller", report
    assert int(fields[1]) >= 40 and abs(float(fields[2]) - 800) < 10, report


WRONG_REACTOR = """
import asyncio
from twisted.internet import epollreactor
epollreactor.install()
from sipd import aio

async def main():
    try:
        await asyncio.wait_for(aio.SimplePeer.create("alice", 0), 5)
    except aio.WrongReactorError as exc:
        print("error:", exc)
    else:
        print("no error")

asyncio.run(main())
"""

NO_LOOP = """
from sipd import aio
try:
    aio.install()
except aio.WrongReactorError as exc:
    print("error:", exc)
"""


def test_the_wrong_reactor_is_a_clear_error_not_a_hang(tmp_path: Path) -> None:
    proc = run_script(tmp_path, WRONG_REACTOR)
    report = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, report
    assert "error: Twisted's twisted.internet.epollreactor.EPollReactor is already installed" in (
        proc.stdout
    ), report
    assert "twisted.internet.asyncioreactor.install" in proc.stdout, report
    proc = run_script(tmp_path, NO_LOOP)
    assert "error: sipd.aio needs a running asyncio loop" in proc.stdout, proc.stdout + proc.stderr
