"""The daemon's ``stream`` handler end to end: a sipd caller -> ``twistd sipd`` -> a WebSocket bot.

The daemon is a real subprocess (started as tests/integration/test_daemon.py
does); the bot is autobahn's server in the test's process
(tests/integration/stream_bot.py). A caller hears its own tone back through
the bot; a bot that never answers the handshake makes the daemon refuse the
call with 503 within the configured timeout, the reason in its log.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest_twisted

from sipd import CallRejected
from sipd.media.tones import ToneGenerator, dominant_frequency
from tests.conftest import PeerFactory, get_reactor, settle, within
from tests.integration.stream_bot import SilentServer, TestBot
from tests.integration.test_daemon import start_daemon, write_config


@pytest_twisted.ensureDeferred
async def test_a_caller_hears_itself_through_the_daemon_and_the_bot(
    tmp_path: Path, peers: PeerFactory
) -> None:
    bot = TestBot(echo=True)
    config = tmp_path / "sipd.yaml"
    write_config(
        config,
        handler="stream",
        settings={"url": bot.url, "protocol": "media-stream", "parameters": {"team": "sales"}},
    )
    daemon = start_daemon(tmp_path, config)
    try:
        await daemon.until_ready()
        alice = await peers("alice")
        call = await within(alice.call(daemon.sip_uri), 5)
        await within(call.wait_for_answer(), 10)
        conn = await within(bot.next_connection(), 5)
        gen = ToneGenerator(700)
        heard = []
        for _ in range(60):
            await within(call.send_audio(gen.next_frame()), 2)
            while (frame := call.try_recv_audio()) is not None:
                heard.append(frame.samples)
        await settle(0.3)
        while (frame := call.try_recv_audio()) is not None:
            heard.append(frame.samples)
        await within(call.hangup(), 5)
        await within(conn.closed, 5)
    finally:
        code = await daemon.stop()
        await bot.stop()
    assert code == 0, daemon.report()
    start = conn.events("start")[0]["start"]
    assert start["callSid"] == call.sip_call_id, daemon.report()
    assert start["customParameters"] == {
        "team": "sales",
        "from_number": "alice",
        "to_number": "service",
    }
    assert conn.received[-1][1]["event"] == "stop"
    frames = np.concatenate(heard).reshape(-1, 160)
    loud = frames[np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1)) > 1000]
    assert len(loud) >= 40, f"only {len(loud)} tone frames came back\n{daemon.report()}"
    assert abs(dominant_frequency(loud.reshape(-1)) - 700) < 10


@pytest_twisted.ensureDeferred
async def test_a_mute_bot_means_503_within_the_timeout(tmp_path: Path, peers: PeerFactory) -> None:
    server = SilentServer()
    url = server.url
    config = tmp_path / "sipd.yaml"
    write_config(config, handler="stream", settings={"url": url, "connect_timeout": 1})
    daemon = start_daemon(tmp_path, config)
    reactor = get_reactor()
    try:
        await daemon.until_ready()
        alice = await peers("alice")
        began = reactor.seconds()
        call = await within(alice.call(daemon.sip_uri), 5)
        try:
            await within(call.wait_for_answer(), 5)
        except CallRejected as exc:
            rejected = exc
        else:
            raise AssertionError(f"the call was answered\n{daemon.report()}")
        took = reactor.seconds() - began
        await daemon.until_log(re.escape(f"refused: could not open the bot's WebSocket {url}"))
        await daemon.until_log("no WebSocket handshake within 1 s")
    finally:
        code = await daemon.stop()
        await server.stop()
    assert code == 0, daemon.report()
    assert rejected.status == 503, (rejected, daemon.report())
    assert 0.9 <= took <= 2.5, took
