"""Safe by default: the console on a non-loopback address wants credentials.

A non-loopback address is needed to test that honestly, and the tests must
use only loopback on the host; so the check runs in a private network
namespace (``unshare --net``, as root) whose loopback device also carries
10.99.0.1: the daemon binds its HTTP port there, nothing outside the
namespace can reach it, and it is gone when the namespace's last process
exits. Inside, :func:`netns_check` (run as ``python -c``) starts the real
daemon, makes the requests and prints what it saw as JSON for the test.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.test_daemon import ROOT, start_daemon, write_config

ADDRESS = "10.99.0.1"
TOKEN = "test-token-0123456789abcdef"


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def netns_check(tmp: str) -> dict[str, Any]:
    """Inside the namespace: the daemon on 10.99.0.1, with and without credentials."""
    tmp_path = Path(tmp)
    result: dict[str, Any] = {}
    # 1. No credentials on a non-loopback bind: refused when the config is read.
    bare = tmp_path / "bare.yaml"
    doc = write_config(bare)
    doc["http"] = {"listen": f"{ADDRESS}:{_free_port(ADDRESS)}"}
    bare.write_text(yaml.safe_dump(doc, sort_keys=False))
    daemon = start_daemon(tmp_path, bare)
    result["bare_exit"] = daemon.proc.wait(30)
    result["bare_log"] = daemon.log()[-2000:]
    # 2. With a token and a user: 401 without them, 200 with either.
    guarded = tmp_path / "guarded.yaml"
    doc = write_config(guarded)
    port = _free_port(ADDRESS)
    doc["http"] = {"listen": f"{ADDRESS}:{port}"}
    doc["console"] = {"token": TOKEN, "users": {"ops": "s3cret-pass"}}
    guarded.write_text(yaml.safe_dump(doc, sort_keys=False))
    daemon = start_daemon(tmp_path, guarded)
    try:
        daemon.wait_ready()
        base = f"http://{ADDRESS}:{port}"
        basic = base64.b64encode(b"ops:s3cret-pass").decode()
        wrong = base64.b64encode(b"ops:wrong").decode()
        probes = {
            "index": (f"{base}/", {}),
            "api": (f"{base}/api/calls", {}),
            "call": (f"{base}/calls/abc", {}),
            "pcap": (f"{base}/calls/abc.pcap", {}),
            "wrong_token": (f"{base}/?token=nope", {}),
            "wrong_basic": (f"{base}/", {"Authorization": f"Basic {wrong}"}),
            "query_token": (f"{base}/api/calls?token={TOKEN}", {}),
            "bearer": (f"{base}/api/calls", {"Authorization": f"Bearer {TOKEN}"}),
            "basic": (f"{base}/", {"Authorization": f"Basic {basic}"}),
            "status": (f"{base}/status", {}),
            "metrics": (f"{base}/metrics", {}),
        }
        for name, (url, headers) in probes.items():
            code, got, _ = _get(url, headers)
            result[name] = [code, got.get("WWW-Authenticate", got.get("www-authenticate", ""))]
    finally:
        result["guarded_exit"] = daemon.terminate()
        result["guarded_log"] = daemon.log()[-2000:]
    return result


def test_a_non_loopback_console_wants_a_token_or_a_login(tmp_path: Path) -> None:
    """401 with WWW-Authenticate without credentials; refused config without any."""
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if unshare is None or ip is None:
        pytest.fail("unshare (util-linux) and ip (iproute2) are needed for this test")
    if os.geteuid() != 0:
        pytest.fail("this test makes a private network namespace: run it as root")
    code = (
        "import json, sys; from tests.integration.test_console_auth import netns_check; "
        f"print('RESULT' + json.dumps(netns_check({str(tmp_path)!r})))"
    )
    script = f'{ip} link set lo up && {ip} addr add {ADDRESS}/32 dev lo && exec "$0" -c "$1"'
    proc = subprocess.run(
        [unshare, "--net", "sh", "-c", script, sys.executable, code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    found = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    assert proc.returncode == 0 and found, f"{proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    r = json.loads(found[0][6:])
    assert r["bare_exit"] != 0, r["bare_log"]
    assert "bare.yaml:" in r["bare_log"] and "http.listen" in r["bare_log"], r["bare_log"]
    assert "console.token or console.users" in r["bare_log"], r["bare_log"]
    for name in ("index", "api", "call", "pcap", "wrong_token", "wrong_basic"):
        assert r[name][0] == 401, (name, r)
        assert r[name][1].startswith("Basic realm="), (name, r)
    assert r["query_token"][0] == 200 and r["bearer"][0] == 200 and r["basic"][0] == 200, r
    assert r["status"][0] == 200 and r["metrics"][0] == 200, r
    assert r["guarded_exit"] == 0, r["guarded_log"]
