"""The daemon's YAML config and ``twistd sipd`` options: mistakes name file, line and key.

Each bad file is written to tmp_path and loaded the way twistd loads it;
the message must start with ``<file>:<line>: <key>:`` so an operator can go
straight to the mistake. One check runs twistd itself to prove the error
arrives before any port is bound.
"""

from __future__ import annotations

import dataclasses
import socket
import subprocess
from pathlib import Path

import pytest
import yaml
from twisted.python import usage

from sipd.config import SipdConfig
from sipd.daemon.config import DaemonConfig, load_config
from sipd.errors import ConfigError
from sipd.tap import Options
from tests.conftest import free_udp_port
from tests.integration.test_daemon import (
    ROOT,
    TWISTD,
    _raw_request,
    free_tcp_port,
    running_daemon,
    write_config,
)

DEFAULT_FILE = ROOT / "etc" / "sipd.yaml"


def test_the_shipped_default_file_holds_the_built_in_defaults() -> None:
    """etc/sipd.yaml loads cleanly and every value equals the code's default."""
    cfg = load_config(str(DEFAULT_FILE))
    defaults = SipdConfig()
    for f in dataclasses.fields(SipdConfig):
        if f.name in ("host", "port", "name", "user_agent"):
            continue
        assert getattr(cfg.sip, f.name) == getattr(defaults, f.name), f.name
    assert (cfg.sip.host, cfg.sip.port) == ("127.0.0.1", 5060)
    plain = DaemonConfig()
    assert cfg.handler == plain.handler == "echo"
    assert (cfg.http_host, cfg.http_port) == (plain.http_host, plain.http_port)
    assert cfg.grace == plain.grace


@pytest.mark.parametrize(
    ("text", "line", "key", "why"),
    [
        ("sip:\n  listen: 127.0.0.1:5060\n  colour: red\n", 3, "sip.colour", "unknown key"),
        ("sip:\n  listen: 127.0.0.1:5060\nsipp:\n  x: 1\n", 3, "sipp", "unknown key"),
        ("timers:\n  t1: fast\n", 2, "timers.t1", "must be a number"),
        ("timers:\n  t1: 0\n", 2, "timers.t1", "positive"),
        ("media:\n  dtmf: maybe\n", 2, "media.dtmf", "true or false"),
        ("media:\n  codecs: PCMU\n", 2, "media.codecs", "must be a list"),
        ("media:\n  codecs: [G729]\n", 2, "media.codecs", "PCMU, PCMA"),
        ("media:\n  jitter_depth: 2.5\n", 2, "media.jitter_depth", "integer"),
        ("media:\n  unreachable_timeout: -1\n", 2, "media.unreachable_timeout", "at least 0"),
        ("media:\n  unreachable_timeout: soon\n", 2, "media.unreachable_timeout", "a number"),
        ("sip:\n  listen: 127.0.0.1:99999\n", 2, "sip.listen", "bad port"),
        ("sip:\n  listen: 999.1.1.1:5060\n", 2, "sip.listen", "not an IPv4 or IPv6 address"),
        ("sip:\n  listen: sip.example.com:5060\n", 2, "sip.listen", "not an IPv4 or IPv6"),
        ("http:\n  listen: 127.0.0.1:http\n", 2, "http.listen", "bad port"),
        (
            "media:\n  port_min: 30000\n  port_max: 20000\n",
            2,
            "media.port_min",
            "30000-20000 must be a range",
        ),
        ("state_table: no-such-table.yaml\n", 1, "state_table", "does not exist"),
        ("shutdown:\n  grace: -1\n", 2, "shutdown.grace", "at least 0"),
        ("timers:\n  defer_status: 200\n", 2, "timers.defer_status", "final status"),
        ("handler:\n  settings: [1, 2]\n", 2, "handler.settings", "must be a mapping"),
        (
            "handler:\n  name: nope\n",
            2,
            "handler.name",
            "unknown handler 'nope' (known handlers: echo, ivr, queue, reject, stream)",
        ),
        ("sip:\n  listen: 127.0.0.1:5060\n  listen: 127.0.0.1:5061\n", 3, "sip.listen", "twice"),
    ],
)
def test_a_bad_config_names_file_line_and_key(
    tmp_path: Path, text: str, line: int, key: str, why: str
) -> None:
    """Each mistake gives one error: ``<file>:<line>: <key>: <why>``."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: {key}: "), message
    assert why in message, message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "line", "key", "why"),
    [
        ("sip:\n  listen: 127.0.0.1:5060\n name: x\n", 3, "sip.name", "expected <block end>"),
        # The parser notices these a line (or a file) later than the mistake.
        ("sip:\n  name: [a, b\nmedia:\n  dtmf: true\n", 2, "sip.name", "never closed with ']'"),
        ('sip:\n  user_agent: "x\n  name: y\n', 2, "sip.user_agent", "quoted string"),
        ("http: {listen: off\nsip: {}\n", 1, "http", "never closed with '}'"),
        ("sip:\n  listen 127.0.0.1:5060\n  name: x\n", 2, "sip.listen", "missing ':'"),
        ("media:\n  codecs:\n    - PCMU\n    - [PCMA\n\n", 4, "media.codecs", "never closed"),
        ("timers:\n\tt1: 0.5\n", 2, "timers.t1", "'\\t'"),
    ],
)
def test_a_yaml_syntax_error_names_file_line_and_key(
    tmp_path: Path, text: str, line: int, key: str, why: str
) -> None:
    """Broken YAML is one line naming the line of the mistake and its key, not a traceback."""
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: {key}: not valid YAML: "), message
    assert why in message, message
    assert "\n" not in message


def test_media_unreachable_timeout_is_read_from_the_media_section(tmp_path: Path) -> None:
    """media.unreachable_timeout is SipdConfig.media_unreachable_timeout (0 turns it off)."""
    path = tmp_path / "sipd.yaml"
    path.write_text("media:\n  timeout: 30\n  unreachable_timeout: 2.5\n")
    cfg = load_config(str(path))
    assert (cfg.sip.media_timeout, cfg.sip.media_unreachable_timeout) == (30, 2.5)
    path.write_text("media:\n  unreachable_timeout: 0\n")
    assert load_config(str(path)).sip.media_unreachable_timeout == 0


def test_an_unreadable_config_file_is_named(tmp_path: Path) -> None:
    """A missing config file is one clear error naming it."""
    with pytest.raises(ConfigError, match=r"cannot read config file .*missing\.yaml"):
        load_config(str(tmp_path / "missing.yaml"))


def test_paths_in_the_config_are_relative_to_its_folder(tmp_path: Path) -> None:
    """state_table resolves next to the config file, not the working directory."""
    table = (ROOT / "sipd" / "data" / "state_table.yaml").read_text()
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "table.yaml").write_text(table)
    path = tmp_path / "conf" / "sipd.yaml"
    path.write_text("state_table: table.yaml\n")
    cfg = load_config(str(path))
    assert cfg.sip.state_table_path == str(tmp_path / "conf" / "table.yaml")


# -- command-line overrides ---------------------------------------------------------------
def _options(*args: str) -> DaemonConfig:
    options = Options()
    options.parseOptions(list(args))
    cfg: DaemonConfig = options["daemon_config"]
    return cfg


def test_command_line_options_override_the_file(tmp_path: Path) -> None:
    """--listen, --handler, --http, --media-ports and --grace replace the file's values."""
    path = tmp_path / "sipd.yaml"
    write_config(path)
    from_file = load_config(str(path))
    cfg = _options(
        *("--config", str(path), "--listen", "127.0.0.1:5999", "--handler", "reject"),
        *("--http", "127.0.0.1:9099", "--media-ports", "40000-40099", "--grace", "2.5"),
    )
    assert (cfg.sip.host, cfg.sip.port) == ("127.0.0.1", 5999)
    assert cfg.handler == "reject"
    assert (cfg.http_host, cfg.http_port) == ("127.0.0.1", 9099)
    assert (cfg.sip.media_port_min, cfg.sip.media_port_max) == (40000, 40099)
    assert cfg.grace == 2.5
    # What was not overridden still comes from the file.
    assert cfg.sip.t1 == from_file.sip.t1 == 0.05
    assert _options("--config", str(path), "--http", "off").http_host is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--listen", "127.0.0.1:notaport"], "--listen: bad port"),
        (["--http", "localhost:80"], "--http: 'localhost' is not an IPv4"),
        (["--media-ports", "40000"], "--media-ports: '40000' must look like"),
        (["--media-ports", "5000-4000"], "--media-ports: 5000-4000 must be a range"),
        (["--grace", "soon"], "--grace: 'soon' is not a number"),
        (["--handler", "acme"], "--handler: unknown handler 'acme' (known handlers: echo, ivr"),
        (["--state-table", "/no/such/table.yaml"], "--state-table: file '/no/such/table.yaml'"),
    ],
)
def test_bad_command_line_options_exit_with_one_line(args: list[str], message: str) -> None:
    """A bad override exits (status 1) with one line naming the option, no usage text.

    A ``usage.UsageError`` would make twistd print its 13-line usage first.
    """
    with pytest.raises(SystemExit) as info:
        _options(*args)
    assert not isinstance(info.value, usage.UsageError)
    assert isinstance(info.value.code, str), info.value.code
    assert info.value.code.startswith(message), info.value.code
    assert "\n" not in info.value.code


# -- twistd itself --------------------------------------------------------------------------
def _port_is_free(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.mark.parametrize(
    ("tail", "line", "expected"),
    [
        ("handler:\n  name: nope\n", 8, "handler.name: unknown handler 'nope'"),
        ("timers:\n  t2: -4\n", 8, "timers.t2: "),
        # The handler checks its own settings once the file itself is valid.
        ("handler:\n  name: queue\n  settings:\n    agents: 3\n", 10, "handler.settings.agents"),
        ("sip:\n  name: [a\n", 8, "sip.name: not valid YAML"),
    ],
)
def test_twistd_with_a_bad_config_exits_before_binding_any_port(
    tmp_path: Path, tail: str, line: int, expected: str
) -> None:
    """``twistd sipd --config bad.yaml`` exits non-zero with file:line: key and binds nothing."""
    sip_port, http_port = free_udp_port(), free_tcp_port()
    path = tmp_path / "bad.yaml"
    path.write_text(
        f"# a config with one mistake at the end\nsip:\n  listen: 127.0.0.1:{sip_port}\n"
        f"http:\n  listen: 127.0.0.1:{http_port}\n\n{tail}"
    )
    result = subprocess.run(
        [*TWISTD, "-n", "--pidfile=", "sipd", "--config", str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert f"{path}:{line}: {expected}" in output, output
    assert "Traceback" not in output, output
    assert "Usage:" not in output and len(output.strip().splitlines()) == 1, output
    assert "listening on" not in output, output
    assert _port_is_free(sip_port, socket.SOCK_DGRAM)
    assert _port_is_free(http_port, socket.SOCK_STREAM)


@pytest.mark.parametrize("taken", ["SIP", "HTTP"])
def test_twistd_on_a_busy_port_says_so_in_one_line(tmp_path: Path, taken: str) -> None:
    """Another program on the SIP (UDP) or HTTP (TCP) address: one line naming it, exit 1."""
    kind = socket.SOCK_DGRAM if taken == "SIP" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as holder:
        holder.bind(("127.0.0.1", 0))
        if taken == "HTTP":
            holder.listen(1)
        busy = holder.getsockname()[1]
        sip_port = busy if taken == "SIP" else free_udp_port()
        http_port = busy if taken == "HTTP" else free_tcp_port()
        listen = ("--listen", f"127.0.0.1:{sip_port}", "--http", f"127.0.0.1:{http_port}")
        result = subprocess.run(
            [*TWISTD, "-n", "--pidfile=", "sipd", *listen],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
            check=False,
        )
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 1, output
    option = "--listen or sip.listen" if taken == "SIP" else "--http or http.listen"
    assert output == (
        f"twistd sipd: cannot listen for {taken} on 127.0.0.1:{busy}: address already in use "
        f"(choose another address with {option})"
    )
    # Nothing was bound: the other address is free too.
    if taken == "SIP":
        assert _port_is_free(http_port, socket.SOCK_STREAM)
    else:
        assert _port_is_free(sip_port, socket.SOCK_DGRAM)


def test_twistd_listens_where_the_command_line_says(tmp_path: Path) -> None:
    """--listen, --http and --handler given to twistd move the running daemon."""
    path = tmp_path / "sipd.yaml"
    doc = write_config(path)
    sip_port, http_port = free_udp_port(), free_tcp_port()
    args = ("--listen", f"127.0.0.1:{sip_port}", "--http", f"127.0.0.1:{http_port}")
    with running_daemon(tmp_path, path, *args, "--handler", "reject") as daemon:
        daemon.sip_port, daemon.http_port = sip_port, http_port
        status = daemon.status()
        assert status["listen"] == f"127.0.0.1:{sip_port}"
        assert status["handler"] == "reject"
        assert _raw_request(sip_port, "INVITE")[-1].startswith("SIP/2.0 486")
        file_port = int(doc["sip"]["listen"].rsplit(":", 1)[1])
        assert _port_is_free(file_port, socket.SOCK_DGRAM)
    assert yaml.safe_load(path.read_text()) == doc
