"""The Kamailio harness against sipp and baresip alone: digest REGISTER, location, proxying.

No sipd here: these tests prove that the registrar and proxy the interop
suite starts (tests/interop/kamailio/kamailio.cfg via harness.py)
challenges, accepts only the right password, shows its bindings through
``ul.dump``, and relays an authenticated call between two registered UAs
with record-routing, so a later sipd test can rely on it.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from pathlib import Path

import pytest
import pytest_twisted

from tests.interop.harness import (
    SCENARIOS,
    Interop,
    Kamailio,
    ManagedProcess,
    dominant_frequency,
    interop,
    kamailio_users,
    read_wav,
    settle,
    sounding_seconds,
    start_kamailio,
    write_tone_wav,
)

__all__ = ["interop"]

pytestmark = pytest.mark.interop

REGISTER_AUTH = SCENARIOS / "register_auth.xml"


def _register(interop: Interop, k: Kamailio, user: str, password: str) -> ManagedProcess:
    return interop.sipp(
        [
            "-sf",
            str(REGISTER_AUTH),
            "-s",
            user,
            "-au",
            user,
            "-ap",
            password,
            "-set",
            "expires",
            "60",
            "-m",
            "1",
            "-timeout",
            "10s",
            "-timeout_error",
        ],
        remote=k.host_port,
    )


def _responses(sipp: ManagedProcess) -> list[str]:
    """Status lines sipp received, in order, from its message trace."""
    text = (sipp.log_path.parent / "messages.log").read_text(errors="replace")
    return re.findall(r"message received \[\d+\] bytes :\s*\n\s*(SIP/2\.0 \d{3}[^\r\n]*)", text)


def _challenge(sipp: ManagedProcess) -> str:
    text = (sipp.log_path.parent / "messages.log").read_text(errors="replace")
    found = re.search(r"WWW-Authenticate: ([^\r\n]*)", text)
    assert found, f"no WWW-Authenticate in sipp's trace\n{sipp.report()}"
    return found.group(1)


def test_users_file_lists_the_test_accounts() -> None:
    """users.cfg gives every test account a non-empty password."""
    users = kamailio_users()
    assert {"alice", "bob", "carol", "dave"} <= set(users)
    assert all(users.values())


def test_kamailio_starts_answers_rpc_and_stops_with_all_its_workers(tmp_path: Path) -> None:
    """Without a reactor: start, ul.dump is empty, stop() ends the whole process group."""
    k = start_kamailio(tmp_path / "kamailio")
    try:
        k.wait_ready_blocking()
        assert k.registrations_blocking() == {}
        assert k.rpc_blocking("core.version").startswith("kamailio 5.")
        assert f"udp: 127.0.0.1 [127.0.0.1]:{k.port}" in k.process.log_text()
    finally:
        code = k.stop()
    assert code == 0, k.report()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(k.process.pid, 0)
        pytest.fail(f"kamailio workers outlived stop()\n{k.report()}")
    assert not k.runtime_dir.exists()


@pytest_twisted.ensureDeferred
async def test_sipp_registers_with_digest_credentials_and_ul_dump_shows_it(
    interop: Interop,
) -> None:
    """REGISTER gets 401 with a qop=auth challenge; with alice's password, 200 and a binding."""
    k = await interop.kamailio()
    assert await k.registrations() == {}
    sipp = _register(interop, k, "alice", k.users["alice"])
    code = await sipp.wait_exit(15)
    assert code == 0, f"sipp's REGISTER failed\n{sipp.report()}\n{k.report()}"
    assert [r.split()[1] for r in _responses(sipp)] == ["401", "200"]
    challenge = _challenge(sipp)
    assert challenge.startswith("Digest ")
    assert 'realm="sipd.test"' in challenge and 'qop="auth"' in challenge
    table = await k.registrations()
    assert list(table) == ["alice"]
    (binding,) = table["alice"]
    assert binding.contact == f"sip:alice@127.0.0.1:{sipp.port}"
    assert binding.expires is not None and 50 <= binding.expires <= 60
    assert binding.user_agent == "sipp-register-auth"
    assert binding.socket == f"udp:127.0.0.1:{k.port}"
    assert binding.cseq == 2
    # The binrpc socket answers kamcmd, for debugging by hand.
    kamcmd = subprocess.run(
        ["/usr/sbin/kamcmd", "-s", k.ctl_socket, "ul.dump"],
        capture_output=True,
        text=True,
        timeout=5,
    )
    assert kamcmd.returncode == 0, kamcmd.stderr
    assert "AoR: alice" in kamcmd.stdout


@pytest_twisted.ensureDeferred
async def test_a_wrong_password_is_challenged_again_and_leaves_no_binding(
    interop: Interop,
) -> None:
    """bob with a wrong password gets 401 then 403, sipp fails, ul.dump stays empty."""
    k = await interop.kamailio()
    sipp = _register(interop, k, "bob", "not-" + k.users["bob"])
    code = await sipp.wait_exit(15)
    assert code != 0, f"sipp registered with a wrong password\n{sipp.report()}"
    assert [r.split()[1] for r in _responses(sipp)][:2] == ["401", "403"]
    assert await k.registrations() == {}
    assert "refusing REGISTER from sip:bob@" in k.process.log_text()


@pytest_twisted.ensureDeferred
async def test_without_qop_the_challenge_is_plain_digest_and_still_accepted(
    interop: Interop,
) -> None:
    """kamailio started with qop=False challenges without qop; carol still registers."""
    k = await interop.kamailio(qop=False)
    sipp = _register(interop, k, "carol", k.users["carol"])
    code = await sipp.wait_exit(15)
    assert code == 0, f"sipp's REGISTER failed\n{sipp.report()}\n{k.report()}"
    assert "qop" not in _challenge(sipp)
    assert [b.contact for b in (await k.registrations())["carol"]] == [
        f"sip:carol@127.0.0.1:{sipp.port}"
    ]


@pytest_twisted.ensureDeferred
async def test_baresip_registers_with_its_password(interop: Interop, tmp_path: Path) -> None:
    """A baresip account with auth_pass registers; ul.dump shows its contact and agent."""
    k = await interop.kamailio()
    tone = write_tone_wav(tmp_path / "tone.wav", 440, 5)
    baresip = await interop.baresip("dave", tone=tone, registrar=k)
    (binding,) = await k.wait_registered("dave")
    assert re.fullmatch(rf"sip:dave-[^@]+@127\.0\.0\.1:{baresip.sip_port}", binding.contact), (
        binding
    )
    assert binding.user_agent.startswith("baresip")
    await baresip.process.wait_log(r"dave@127\.0\.0\.1: .*200 OK .*\[1 binding\]")


@pytest_twisted.ensureDeferred
async def test_a_wrong_baresip_password_leaves_no_binding(interop: Interop, tmp_path: Path) -> None:
    """The oracle can fail: baresip with a wrong auth_pass is refused with 403."""
    k = await interop.kamailio()
    tone = write_tone_wav(tmp_path / "tone.wav", 440, 5)
    baresip = await interop.baresip("dave", tone=tone, registrar=k, password="wrong")
    await baresip.process.wait_log(r"reg: sip:dave@127\.0\.0\.1:\d+: 403 Forbidden")
    assert await k.registrations() == {}


@pytest_twisted.ensureDeferred
async def test_baresip_calls_baresip_through_kamailio_and_each_records_the_other(
    interop: Interop, tmp_path: Path
) -> None:
    """alice's INVITE is challenged (407), relayed to bob's binding; the BYE is record-routed."""
    k = await interop.kamailio()
    alice = await interop.baresip(
        "alice", tone=write_tone_wav(tmp_path / "alice.wav", 440, 30), registrar=k
    )
    bob = await interop.baresip(
        "bob", tone=write_tone_wav(tmp_path / "bob.wav", 1000, 30), registrar=k
    )
    await k.wait_registered("alice")
    await k.wait_registered("bob")

    await alice.dial(k.aor("bob"))
    assert (await bob.wait_event("CALL_ESTABLISHED"))["direction"] == "incoming"
    await alice.wait_event("CALL_ESTABLISHED")
    await alice.wait_event("CALL_RTPESTAB")
    await settle(2.0)
    await alice.hangup()
    await alice.wait_event("CALL_CLOSED")
    await bob.wait_event("CALL_CLOSED")

    log = k.process.log_text(200_000)
    assert "challenging INVITE from sip:alice@" in log, k.report()
    # bob's side got the BYE through the proxy: it was record-routed.
    assert re.search(r"<- BYE sip:bob-[^ ]+ from 127\.0\.0\.1:", log), k.report()
    for who, heard, freq in ((alice, bob, 1000.0), (bob, alice, 440.0)):
        path = who.received_wav()
        assert path is not None, f"{who.user} wrote no recording\n{who.report()}"
        samples, rate = read_wav(path)
        assert sounding_seconds(samples, rate) >= 1.5, (
            f"{who.user} heard too little of {heard.user}"
        )
        peak, share = dominant_frequency(samples, rate)
        assert abs(peak - freq) <= 5 and share >= 0.8, (
            f"{who.user}'s recording peaks at {peak:.1f} Hz ({share:.0%}), "
            f"not {heard.user}'s {freq} Hz"
        )


@pytest_twisted.ensureDeferred
async def test_a_caller_cancels_a_ringing_call_through_kamailio(
    interop: Interop, tmp_path: Path
) -> None:
    """An outside caller (no auth) reaches bob's binding; its CANCEL ends bob's ringing with 487."""
    k = await interop.kamailio()
    tone = write_tone_wav(tmp_path / "tone.wav", 440, 5)
    bob = await interop.baresip("bob", tone=tone, registrar=k, answermode="manual")
    await k.wait_registered("bob")
    sipp = interop.sipp(
        [
            "-sf",
            str(SCENARIOS / "uac_cancel.xml"),
            "-s",
            "bob",
            "-m",
            "1",
            "-timeout",
            "10s",
            "-timeout_error",
        ],
        remote=k.host_port,
    )
    await bob.wait_event("CALL_INCOMING")
    code = await sipp.wait_exit(15)
    assert code == 0, f"sipp's CANCEL scenario failed\n{sipp.report()}\n{k.report()}"
    closed = await bob.wait_event("CALL_CLOSED")
    assert closed["direction"] == "incoming"
    assert [r.split()[1] for r in _responses(sipp)][-2:] == ["200", "487"]
    log = k.process.log_text(200_000)
    assert re.search(r"<- CANCEL sip:bob@127\.0\.0\.1:\d+ from", log), k.report()
    assert "challenging INVITE" not in log
