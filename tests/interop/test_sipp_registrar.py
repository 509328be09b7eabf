"""sipp registers and calls with digest authentication at the sipd daemon as registrar.

The daemon runs as a real ``twistd -n sipd`` process (helpers from
``tests/integration/test_daemon.py``) with a ``registrar`` section whose
users are HA1 hashes printed by ``python -m sipd.daemon.ha1``. sipp answers
digest challenges with MD5 only and reads the first challenge it gets, so
alice's entry keeps only her MD5 hash: the daemon then offers her MD5 alone.
sipp's exit status is the oracle (0: the scenario ran as written); the
daemon's ``/status`` and ``/metrics`` are checked as well.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import SIPP, free_udp_port
from tests.integration.test_daemon import Daemon, running_daemon, write_config

pytestmark = pytest.mark.interop

SCENARIOS = Path(__file__).with_name("scenarios")
ROOT = Path(__file__).resolve().parents[2]
REALM = "sipd.interop"
PASSWORD = "alice-pw"


def ha1_entry(user: str, password: str) -> dict[str, str]:
    """The hashes ``python -m sipd.daemon.ha1`` prints for ``user`` (its YAML, parsed)."""
    out = subprocess.run(
        [sys.executable, "-m", "sipd.daemon.ha1", user, REALM, "--password", password],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    entry: dict[str, str] = yaml.safe_load(out)[user]
    return entry


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    """The echo daemon as registrar for alice (MD5 HA1 only) with INVITE auth on."""
    if not os.access(SIPP, os.X_OK):
        pytest.fail(f"{SIPP} is missing: install the Debian package sip-tester")
    hashes = ha1_entry("alice", PASSWORD)
    assert set(hashes) == {"SHA-256", "MD5"}
    config = tmp_path / "sipd.yaml"
    doc = write_config(config)
    doc["registrar"] = {
        "realm": REALM,
        "users": {"alice": hashes["MD5"]},
        "authenticate_invites": True,
        "min_expires": 10,
    }
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    with running_daemon(tmp_path, config) as d:
        yield d


def run_sipp(
    tmp_path: Path, daemon: Daemon, scenario: str, *args: str, timeout: float = 20
) -> tuple[int, int, str]:
    """Run sipp with a scenario file for one call; (exit code, sipp's port, its output)."""
    port = free_udp_port()
    workdir = tmp_path / f"sipp-{scenario}-{port}"
    workdir.mkdir()
    command = [
        *(SIPP, "-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1", "-p", str(port)),
        *("-m", "1", "-nostdin", "-timeout", "15s", "-timeout_error", "-trace_err"),
        *args,
        f"127.0.0.1:{daemon.sip_port}",
    ]
    proc = subprocess.Popen(
        command,
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
    errors = "".join(p.read_text(errors="replace") for p in workdir.glob("*errors.log"))
    text = out.decode(errors="replace")[-3000:] + "\n" + errors[-2000:]
    return proc.returncode, port, text


def auth(user: str, password: str) -> list[str]:
    """sipp's digest credentials (its digest uri is ``sip:remote:port`` unless -auth_uri)."""
    return ["-au", user, "-ap", password]


def test_sipp_registers_with_digest_auth_and_status_shows_it(
    tmp_path: Path, daemon: Daemon
) -> None:
    """sipp's REGISTER is challenged, answered with MD5 and bound; /status lists the binding."""
    code, port, out = run_sipp(
        tmp_path, daemon, "register_auth.xml", "-s", "alice", *auth("alice", PASSWORD),
        "-set", "expires", "60",
    )  # fmt: skip
    assert code == 0, f"sipp failed\n{out}\n{daemon.report()}"
    registrations = daemon.status()["registrations"]
    assert list(registrations) == ["alice"], registrations
    (binding,) = registrations["alice"]
    assert binding["contact"] == f"sip:alice@127.0.0.1:{port}"
    assert 55 <= binding["expires"] <= 60


def test_sipp_with_a_wrong_password_is_not_registered(tmp_path: Path, daemon: Daemon) -> None:
    """A wrong password draws a second 401, so sipp's scenario fails and nothing is bound."""
    code, _, out = run_sipp(
        tmp_path, daemon, "register_auth.xml", "-s", "alice", *auth("alice", "wrong"),
        "-set", "expires", "60",
    )  # fmt: skip
    assert code != 0, f"sipp registered with a wrong password\n{out}"
    assert daemon.status()["registrations"] == {}


def test_sipp_invite_with_digest_auth_is_answered_and_completes(
    tmp_path: Path, daemon: Daemon
) -> None:
    """The INVITE gets 401; with credentials the echo handler answers; ACK and BYE complete."""
    code, _, out = run_sipp(
        tmp_path, daemon, "invite_auth.xml", "-s", "echo", *auth("alice", PASSWORD),
        "-set", "caller", "alice", "-auth_uri", f"echo@127.0.0.1:{daemon.sip_port}",
    )  # fmt: skip
    assert code == 0, f"sipp failed\n{out}\n{daemon.report()}"
    metrics = daemon.metrics()
    assert metrics['sipd_sip_requests_received_total{method="INVITE"}'] == 2
    assert metrics['sipd_calls_total{direction="incoming",outcome="completed"}'] == 1


def test_sipp_invite_with_a_wrong_password_is_refused(tmp_path: Path, daemon: Daemon) -> None:
    """With a wrong password the second INVITE is challenged again: no call is set up."""
    code, _, out = run_sipp(
        tmp_path, daemon, "invite_auth.xml", "-s", "echo", *auth("alice", "wrong"),
        "-set", "caller", "alice", "-auth_uri", f"echo@127.0.0.1:{daemon.sip_port}",
        "-timeout", "3s",
    )  # fmt: skip
    assert code != 0, f"sipp's call got through with a wrong password\n{out}"
    metrics = daemon.metrics()
    assert metrics.get('sipd_calls_started_total{direction="incoming"}', 0) == 0
