"""The daemon config's transports, ``tls:`` and ``media.srtp``: parsed onto SipdConfig, mistakes
named by file, line and key.

Each file is written to tmp_path and loaded the way twistd loads it. The
library serves one UA with UDP plus at most one stream transport, so
``sip.transports`` maps to ``SipdConfig.transport``; ``tls:`` maps to a
:class:`~sipd.TlsConfig` whose PEM files are read at load, so a missing or
broken file stops the daemon before it binds, naming the line of its key.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from sipd import TlsConfig
from sipd.daemon.config import DaemonConfig, load_config
from sipd.errors import ConfigError
from tests.certs import CertFiles, make_certs
from tests.integration.test_daemon import ROOT, TWISTD, free_tcp_port


@pytest.fixture
def certs(tmp_path: Path) -> CertFiles:
    folder = tmp_path / "pki"
    folder.mkdir()
    return make_certs(folder)


def load(tmp_path: Path, text: str) -> DaemonConfig:
    path = tmp_path / "sipd.yaml"
    path.write_text(text)
    return load_config(str(path))


def fails(tmp_path: Path, text: str) -> tuple[Path, str]:
    path = tmp_path / "sipd.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    message = str(info.value)
    assert "\n" not in message, message
    return path, message


def server_tls(certs: CertFiles) -> str:
    return f"tls:\n  certificate: {certs.server_cert}\n  private_key: {certs.server_key}\n"


# -- what loads -------------------------------------------------------------------------------
def test_defaults_are_udp_only_without_tls_and_srtp_off(tmp_path: Path) -> None:
    cfg = load(tmp_path, "sip:\n  listen: 127.0.0.1:5070\n")
    assert cfg.sip.transport == "udp" and cfg.sip.tls is None
    assert cfg.sip.srtp == "off" and cfg.sip.tcp_idle_timeout == 300.0
    assert cfg.transports == ["udp"]


def test_udp_and_tls_with_every_tls_key(tmp_path: Path, certs: CertFiles) -> None:
    """Relative paths are the config file's folder's; every TlsConfig field has its key."""
    cfg = load(
        tmp_path,
        "sip:\n  transports: [udp, tls]\n  tcp_idle_timeout: 45\n"
        "tls:\n  certificate: pki/server.crt\n  private_key: pki/server.key\n"
        "  ca_certificates: pki/ca.crt\n  verify: false\n"
        "  require_client_certificate: true\n  server_name: sip.example.org\n",
    )
    sip = cfg.sip
    assert sip.transport == "tls" and sip.tcp_idle_timeout == 45
    assert sip.tls == TlsConfig(
        certificate=str(certs.server_cert),
        private_key=str(certs.server_key),
        ca_certificates=str(certs.ca),
        verify=False,
        require_client_certificate=True,
        server_name="sip.example.org",
    )
    assert cfg.transports == ["udp", "tls"]


def test_null_tls_keys_are_their_defaults(tmp_path: Path, certs: CertFiles) -> None:
    """``ca_certificates: null`` (the system's CAs) and ``server_name: ~`` are the defaults."""
    cfg = load(
        tmp_path,
        f"sip:\n  transports: [udp, tls]\n{server_tls(certs)}"
        "  ca_certificates: null\n  server_name: ~\n",
    )
    assert cfg.sip.tls is not None
    assert cfg.sip.tls.ca_certificates is None and cfg.sip.tls.server_name is None


def test_udp_and_tcp_need_no_tls_section(tmp_path: Path) -> None:
    cfg = load(tmp_path, "sip:\n  transports: [UDP, tcp]\n")
    assert cfg.sip.transport == "tcp" and cfg.sip.tls is None


@pytest.mark.parametrize(
    ("written", "policy"),
    [("off", "off"), ('"off"', "off"), ("optional", "optional"), ("Required", "required")],
)
def test_media_srtp_policies(tmp_path: Path, written: str, policy: str) -> None:
    """An unquoted ``off`` (a YAML boolean) is the policy ``off``, not an error."""
    cfg = load(tmp_path, f"media:\n  srtp: {written}\n")
    assert cfg.sip.srtp == policy


# -- what does not, and where it says so ---------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "line", "key", "why"),
    [
        ("sip:\n  transports: tls\n", 2, "sip.transports", "must be a list"),
        ("sip:\n  transports: []\n", 2, "sip.transports", "must be a list"),
        ("sip:\n  transports: [udp, sctp]\n", 2, "sip.transports[1]", "'sctp' is not one of"),
        ("sip:\n  transports:\n    - udp\n    - udp\n", 4, "sip.transports[1]", "listed twice"),
        ("sip:\n  transports: [tcp]\n", 2, "sip.transports", "udp is always served"),
        (
            "sip:\n  listen: 127.0.0.1:5070\n  transports: [udp, tcp, tls]\n",
            3,
            "sip.transports",
            "tcp and tls would both need TCP port 5070",
        ),
        ("sip:\n  tcp_idle_timeout: 0\n", 2, "sip.tcp_idle_timeout", "must be > 0"),
        ("sip:\n  tcp_idle_timeout: soon\n", 2, "sip.tcp_idle_timeout", "must be a number"),
        ("media:\n  codecs: [PCMU]\n  srtp: maybe\n", 3, "media.srtp", "got 'maybe'"),
        ("media:\n  srtp: [off]\n", 2, "media.srtp", "must be a single value"),
        ("media:\n  srtp: ~\n", 2, "media.srtp", "must be one of off, optional, required"),
        (
            "sip:\n  transports: [udp, tcp]\ntls:\n  ca_certificates: ca.crt\n",
            3,
            "tls",
            "sip.transports does not list tls",
        ),
        ("sip:\n  transports: [udp, tls]\n", 2, "tls.certificate", "missing"),
        ("sip:\n  transports: [udp, tls]\ntls: ~\n", 2, "tls.certificate", "missing"),
    ],
)
def test_mistakes_name_file_line_and_key(
    tmp_path: Path, text: str, line: int, key: str, why: str
) -> None:
    path, message = fails(tmp_path, text)
    assert message.startswith(f"{path}:{line}: {key}: "), message
    assert why in message, message


def test_tls_listener_without_certificate_names_it(tmp_path: Path, certs: CertFiles) -> None:
    path, message = fails(
        tmp_path, f"sip:\n  transports: [udp, tls]\n\ntls:\n  ca_certificates: {certs.ca}\n"
    )
    assert message.startswith(f"{path}:4: tls.certificate: missing"), message
    assert "private_key" in message, message


def test_a_certificate_without_its_key_names_the_key(tmp_path: Path, certs: CertFiles) -> None:
    path, message = fails(
        tmp_path, f"sip:\n  transports: [udp, tls]\ntls:\n  certificate: {certs.server_cert}\n"
    )
    assert message.startswith(f"{path}:3: tls.private_key: missing"), message


@pytest.mark.parametrize("name", ["certificate", "private_key", "ca_certificates"])
def test_a_tls_file_that_does_not_exist(tmp_path: Path, certs: CertFiles, name: str) -> None:
    keys = {
        "certificate": str(certs.server_cert),
        "private_key": str(certs.server_key),
        "ca_certificates": str(certs.ca),
        name: "nowhere/missing.pem",
    }
    body = "".join(f"  {k}: {v}\n" for k, v in keys.items())
    path, message = fails(tmp_path, f"sip:\n  transports: [udp, tls]\ntls:\n{body}")
    line = 4 + list(keys).index(name)
    missing = tmp_path / "nowhere" / "missing.pem"
    assert message == f"{path}:{line}: tls.{name}: file {str(missing)!r} does not exist"


def test_a_directory_is_not_a_pem_file(tmp_path: Path, certs: CertFiles) -> None:
    path, message = fails(
        tmp_path,
        f"sip:\n  transports: [udp, tls]\n{server_tls(certs)}  ca_certificates: pki\n",
    )
    assert message.startswith(f"{path}:6: tls.ca_certificates: file "), message
    assert "is a directory" in message, message


@pytest.mark.parametrize(
    ("extra", "line", "key", "why"),
    [
        ("  verify: sometimes\n", 6, "tls.verify", "true or false"),
        ("  require_client_certificate: true\n", 6, "tls.require_client_certificate", "needs"),
        ("  server_name: ''\n", 6, "tls.server_name", "non-empty string"),
        ("  ciphers: all\n", 6, "tls.ciphers", "unknown key"),
    ],
)
def test_other_tls_keys(
    tmp_path: Path, certs: CertFiles, extra: str, line: int, key: str, why: str
) -> None:
    path, message = fails(tmp_path, f"sip:\n  transports: [udp, tls]\n{server_tls(certs)}{extra}")
    assert message.startswith(f"{path}:{line}: {key}: "), message
    assert why in message, message


def twistd(tmp_path: Path, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TWISTD, "-n", "--pidfile=", "sipd", "--config", str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        check=False,
    )


def test_twistd_stops_on_a_missing_certificate_with_one_line(tmp_path: Path) -> None:
    """The whole path: ``twistd sipd`` prints the one line, no traceback, and binds nothing."""
    http_port = free_tcp_port()
    path = tmp_path / "bad.yaml"
    path.write_text(
        "sip:\n  listen: 127.0.0.1:0\n  transports: [udp, tls]\n"
        f"http:\n  listen: 127.0.0.1:{http_port}\n"
        "tls:\n  certificate: server.crt\n  private_key: server.key\n"
    )
    result = twistd(tmp_path, path)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode != 0, output
    missing = tmp_path / "server.crt"
    assert output == f"{path}:7: tls.certificate: file {str(missing)!r} does not exist", output


def test_the_commented_tls_example_in_etc_sipd_yaml_loads(tmp_path: Path, certs: CertFiles) -> None:
    """The shipped ``tls:`` block, uncommented with real files and tls listed, loads."""
    text = (ROOT / "etc" / "sipd.yaml").read_text()
    lines = text.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("# tls:")))
    end = start
    while lines[end + 1].startswith("#   "):
        end += 1
    for i in range(start, end + 1):
        lines[i] = lines[i][2:]
    text = "\n".join(lines) + "\n"
    text = text.replace("/etc/sipd/tls/sip.crt", "pki/server.crt")
    text = text.replace("/etc/sipd/tls/sip.key", "pki/server.key")
    text = text.replace("transports: [udp] ", "transports: [udp, tls]")
    cfg = load(tmp_path, text)
    assert cfg.sip.transport == "tls" and cfg.sip.srtp == "off"
    assert cfg.sip.tls == TlsConfig(
        certificate=str(certs.server_cert), private_key=str(certs.server_key)
    )


def test_twistd_stops_on_a_key_that_is_not_the_certificates(
    tmp_path: Path, certs: CertFiles
) -> None:
    """What is in the PEM files is read when the config is loaded: twistd exits 1 with
    one line naming file, line and key, before anything listens."""
    path = tmp_path / "bad.yaml"
    path.write_text(
        "sip:\n  listen: 127.0.0.1:0\n  transports: [udp, tls]\nhttp:\n  listen: null\n"
        f"tls:\n  certificate: {certs.server_cert}\n  private_key: {certs.client_key}\n"
    )
    result = twistd(tmp_path, path)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 1, output
    assert output == (
        f"{path}:8: tls.private_key: {certs.client_key} does not belong to "
        f"tls.certificate {certs.server_cert}"
    ), output
    assert "listening on" not in output, output


def test_twistd_on_a_busy_tcp_port_for_tls_says_so_in_one_line(
    tmp_path: Path, certs: CertFiles
) -> None:
    """Another program holds the TCP port the TLS listener needs (UDP is free)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        busy = holder.getsockname()[1]
        path = tmp_path / "busy.yaml"
        path.write_text(
            f"sip:\n  listen: 127.0.0.1:{busy}\n  transports: [udp, tls]\nhttp:\n  listen: null\n"
            f"tls:\n  certificate: {certs.server_cert}\n  private_key: {certs.server_key}\n"
        )
        result = twistd(tmp_path, path)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 1, output
    assert output == (
        f"twistd sipd: cannot listen for SIP over TLS on 127.0.0.1:{busy}: address already "
        "in use (choose another address with --listen or sip.listen)"
    ), output


def test_dns_servers_reach_the_library_and_a_bad_one_names_its_line(tmp_path: Path) -> None:
    cfg = load(tmp_path, 'sip:\n  dns_servers: [10.0.0.53, "127.0.0.1:5353"]\n  dns_timeout: 2\n')
    assert cfg.sip.dns_servers == ["10.0.0.53", "127.0.0.1:5353"]
    assert cfg.sip.dns_timeout == 2
    path, message = fails(tmp_path, "sip:\n  dns_servers: [not an address]\n")
    assert message.startswith(f"{path}:2: sip.dns_servers: "), message
