"""A third-party handler shipped as a Twisted plugin is found by name and used.

The test writes a tiny package the way a third party would ship one — a
``twisted/plugins/acme_handler.py`` drop-in (no ``__init__.py`` in
``twisted/`` or ``twisted/plugins/``) providing an
``ISignalingHandlerFactory`` named ``acme`` — puts its folder on the
daemon's PYTHONPATH, and checks that calls get the plugin's answer.
"""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

from tests.integration.test_daemon import (
    ROOT,
    TWISTD,
    _raw_request,
    start_daemon,
    write_config,
)

PLUGIN = textwrap.dedent(
    '''
    """Acme's sipd handler: refuses every call with 488 and its own reason."""

    from twisted.plugin import IPlugin
    from zope.interface import implementer

    from sipd.session.interceptor import (
        Accept,
        ISignalingHandler,
        ISignalingHandlerFactory,
        Reject,
    )


    @implementer(ISignalingHandler)
    class AcmeHandler:
        def __init__(self, settings):
            self.reason = settings.get("reason", "Acme Says No")

        def on_incoming_invite(self, invite):
            return Reject(488, self.reason)

        def on_response(self, dialog_id, response):
            return Accept()


    @implementer(IPlugin, ISignalingHandlerFactory)
    class AcmeFactory:
        name = "acme"
        description = "reject everything, politely"

        def build(self, coordinator, settings):
            return AcmeHandler(settings)


    acme = AcmeFactory()
    '''
)


def _install_plugin(tmp_path: Path) -> Path:
    root = tmp_path / "thirdparty"
    plugins = root / "twisted" / "plugins"
    plugins.mkdir(parents=True)
    (plugins / "acme_handler.py").write_text(PLUGIN)
    return root


def test_a_plugin_from_a_folder_on_the_path_handles_calls(tmp_path: Path) -> None:
    """``handler: {name: acme}`` loads the drop-in; an INVITE gets its 488 and reason."""
    thirdparty = _install_plugin(tmp_path)
    config = tmp_path / "sipd.yaml"
    write_config(config, handler="acme", settings={"reason": "Not Acceptable Here, Says Acme"})
    daemon = start_daemon(tmp_path, config, pythonpath=[thirdparty])
    try:
        daemon.wait_ready()
        assert "with handler 'acme'" in daemon.log(), daemon.report()
        heard = _raw_request(daemon.sip_port, "INVITE")
        assert heard[-1] == "SIP/2.0 488 Not Acceptable Here, Says Acme", (
            f"{heard}\n{daemon.report()}"
        )
        assert daemon.status()["handler"] == "acme"
        metrics = daemon.metrics()
        assert metrics['sipd_calls_total{direction="incoming",outcome="rejected"}'] == 1, metrics
        code = daemon.terminate()
        assert code == 0, daemon.report()
    finally:
        daemon.kill()


def _twistd(
    tmp_path: Path, config: Path, pythonpath: list[Path]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TWISTD, "-n", "--pidfile=", "sipd", "--config", str(config)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        env={"PYTHONPATH": ":".join(str(p) for p in [*pythonpath, ROOT]), "PATH": "/usr/bin:/bin"},
        check=False,
    )


def test_an_unknown_handler_name_lists_the_known_ones(tmp_path: Path) -> None:
    """Without the plugin on the path, ``acme`` is unknown and the error lists the built-ins."""
    config = tmp_path / "sipd.yaml"
    config.write_text("handler:\n  name: acme\n")
    result = _twistd(tmp_path, config, [])
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert (
        f"{config}:2: handler.name: unknown handler 'acme' "
        "(known handlers: echo, ivr, queue, reject, stream)"
    ) in output, output


def test_the_known_handlers_list_includes_installed_plugins(tmp_path: Path) -> None:
    """With the drop-in installed, a typo's error lists acme beside the built-ins."""
    thirdparty = _install_plugin(tmp_path)
    config = tmp_path / "sipd.yaml"
    config.write_text("handler:\n  name: acmee\n")
    result = _twistd(tmp_path, config, [thirdparty])
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "(known handlers: acme, echo, ivr, queue, reject, stream)" in output, output
