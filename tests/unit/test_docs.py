"""The documentation stays true to the code it describes.

The state-table diagrams are regenerated from the shipped table and compared
with the committed ones; docs/state-table.md lists exactly the shipped table's
states, events, guards and actions, and its example tables load; every Python
block of the README must compile; every name the package exports must be
documented in docs/api.md; and every relative link in the Markdown files must
point at a file that exists.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

import sipd
from sipd.session.call_table import load_call_table
from sipd.session.state_table import Role

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
API = DOCS / "api.md"

_FENCE = re.compile(r"^( *)```(\w*)\n(.*?)^\1```", re.MULTILINE | re.DOTALL)
_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _generator() -> ModuleType:
    """docs/gen_state_diagram.py, loaded from its path (docs/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "gen_state_diagram", DOCS / "gen_state_diagram.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _blocks(path: Path, language: str) -> list[tuple[int, str]]:
    """Fenced code blocks of ``language`` in ``path``, with their first line number."""
    text = path.read_text(encoding="utf-8")
    found = []
    for match in _FENCE.finditer(text):
        if match.group(2) == language:
            indent = len(match.group(1))
            code = "\n".join(line[indent:] for line in match.group(3).splitlines())
            found.append((text.count("\n", 0, match.start()) + 2, code))
    return found


def test_state_table_mmd_matches_the_shipped_table() -> None:
    """docs/state-table.mmd is what gen_state_diagram.py draws from the default table now."""
    gen = _generator()
    expected = gen.expected_mermaid_file(gen.default_table())
    assert (DOCS / "state-table.mmd").read_text() == expected, (
        "docs/state-table.mmd is out of date: run .venv/bin/python docs/gen_state_diagram.py"
    )


def test_state_table_md_embeds_the_current_diagram_of_each_role() -> None:
    """docs/state-table.md holds one generated Mermaid block per role, each up to date."""
    gen = _generator()
    table = gen.default_table()
    text = (DOCS / "state-table.md").read_text()
    for role in Role:
        assert gen.role_block(table, role) in text, f"{role.value} diagram is out of date"
    assert gen.expected_markdown(table, text) == text
    assert gen.check(table) == []


def test_a_stale_diagram_block_is_detected_and_replaced() -> None:
    """The generator notices an edited diagram block and restores the generated one."""
    gen = _generator()
    table = gen.default_table()
    text = (DOCS / "state-table.md").read_text()
    stale = text.replace("Active --> Terminating : HangUp", "Active --> Terminated : HangUp", 1)
    assert stale != text
    assert gen.expected_markdown(table, stale) == text


def test_a_missing_diagram_marker_is_an_error() -> None:
    """Without a role's markers the generator refuses rather than dropping the diagram."""
    gen = _generator()
    only_uac = "<!-- BEGIN generated: UAC -->\n<!-- END generated: UAC -->\n"
    with pytest.raises(ValueError, match="UAS"):
        gen.expected_markdown(gen.default_table(), only_uac)


def _documented_names(text: str, heading: str) -> list[str]:
    """The first-column names of the table under ``### heading`` of the default table."""
    section = text.split("## The default table", 1)[1]
    body = section.split(f"### {heading}\n", 1)[1].split("\n#", 1)[0]
    return re.findall(r"^\| `(\w+)` \|", body, re.MULTILINE)


@pytest.mark.parametrize("heading", ["States", "Events", "Guards", "Actions"])
def test_state_table_md_lists_exactly_the_shipped_names(heading: str) -> None:
    """Each table of "The default table" names every declared name once, and nothing else."""
    table = _generator().default_table()
    declared = getattr(table, heading.lower())
    documented = _documented_names((DOCS / "state-table.md").read_text(), heading)
    assert sorted(documented) == sorted(declared)


def test_state_table_md_example_tables_load_as_call_tables(tmp_path: Path) -> None:
    """Every complete YAML table shown in docs/state-table.md passes the call-table checks."""
    examples = [code for _, code in _blocks(DOCS / "state-table.md", "yaml")]
    tables = [code for code in examples if code.startswith("version:")]
    assert tables, "docs/state-table.md should show a complete example table"
    for n, code in enumerate(tables):
        path = tmp_path / f"example_{n}.yaml"
        path.write_text(code, encoding="utf-8")
        load_call_table(str(path))


def test_readme_python_blocks_compile() -> None:
    """Every ```python block of README.md is valid Python as it stands."""
    blocks = _blocks(README, "python")
    assert len(blocks) >= 2, "the README should show a calling and an answering example"
    for line, code in blocks:
        compile(code, f"README.md:{line}", "exec")


def test_docs_python_blocks_compile_allowing_top_level_await() -> None:
    """Python blocks in docs/*.md compile; fragments may use await at top level."""
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    for path in sorted(DOCS.glob("*.md")):
        for line, code in _blocks(path, "python"):
            compile(code, f"{path.relative_to(ROOT)}:{line}", "exec", flags=flags)


def test_readme_examples_use_names_the_package_exports() -> None:
    """Names the README imports from sipd exist there (a renamed API breaks the README)."""
    for _, code in _blocks(README, "python"):
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.ImportFrom) and node.module == "sipd":
                for alias in node.names:
                    assert alias.name in sipd.__all__, alias.name


def test_every_exported_name_is_documented_in_api_md() -> None:
    """Each public name in sipd.__all__ appears in docs/api.md as code."""
    text = API.read_text(encoding="utf-8")
    missing = [name for name in sipd.__all__ if f"`{name}" not in text]
    assert missing == [], f"docs/api.md does not mention: {missing}"


def test_relative_links_in_markdown_point_at_existing_files() -> None:
    """Every relative link in README.md, CHANGELOG.md and docs/*.md resolves to a file."""
    pages = [README, ROOT / "CHANGELOG.md", *sorted(DOCS.glob("*.md"))]
    broken = []
    for page in pages:
        for target in _LINK.findall(page.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert broken == []


# -- names the docs mention exist ------------------------------------------------------------
_PAGES = [README, *sorted(DOCS.glob("*.md"))]  # not CHANGELOG.md: it names what used to be
_DOTTED = re.compile(r"`(sipd(?:\.\w+)+)")
#: How docs/api.md's method headings name an object (``peer.call(...)``).
_OBJECTS = {
    "SimplePeer": "SimplePeer",
    "peer": "SimplePeer",
    "incoming": "IncomingCall",
    "call": "Call",
    "UnifiedCoordinator": "UnifiedCoordinator",
    "coordinator": "UnifiedCoordinator",
    "session": "UnifiedSession",
    "invite": "InviteDetails",
}


def _resolve(dotted: str) -> object:
    """Import the longest module prefix of ``dotted`` and look the rest up in it."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            target = getattr(target, name)
        return target
    raise ModuleNotFoundError(dotted)


def test_api_md_lists_exactly_the_exported_names() -> None:
    """The export list at the top of docs/api.md is sipd.__all__: nothing missing, nothing old."""
    text = API.read_text(encoding="utf-8")
    listed = text.split("The names exported\nby `sipd` are:", 1)[1].split("\n## ", 1)[0]
    names = re.findall(r"`([A-Za-z_]\w*)`", listed)
    assert sorted(names) == sorted(sipd.__all__)
    assert f'`__version__` (`"{sipd.__version__}"`)' in listed


def test_sipd_paths_named_in_the_docs_exist() -> None:
    """Every `sipd.module.Name` in README.md and docs/*.md imports (renames break docs)."""
    missing = []
    for page in _PAGES:
        for dotted in sorted(set(_DOTTED.findall(page.read_text(encoding="utf-8")))):
            try:
                _resolve(dotted)
            except (ImportError, AttributeError):
                missing.append(f"{page.relative_to(ROOT)}: {dotted}")
    assert missing == []


def test_imports_in_the_docs_python_blocks_exist() -> None:
    """Every ``from sipd... import X`` in README.md and docs/*.md names something real."""
    missing = []
    for page in _PAGES:
        for line, code in _blocks(page, "python"):
            tree = ast.parse(code)
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sipd"):
                    for alias in node.names:
                        try:
                            _resolve(f"{node.module}.{alias.name}")
                        except (ImportError, AttributeError):
                            missing.append(f"{page.relative_to(ROOT)}:{line}: {alias.name}")
    assert missing == []


def test_methods_and_attributes_in_api_md_headings_exist() -> None:
    """``#### `peer.call(...)` ``, ``call.hold()``, ``invite.redirect()``...: each is a member."""
    text = API.read_text(encoding="utf-8")
    headings = re.findall(r"^#{3,4} (.*)$", text, re.MULTILINE)
    found, missing = 0, []
    for heading in headings:
        for obj, member in re.findall(r"`(\w+)\.(\w+)", heading):
            if obj not in _OBJECTS:
                continue
            found += 1
            cls = getattr(sipd, _OBJECTS[obj])
            if not hasattr(cls, member):
                missing.append(f"{obj}.{member} ({_OBJECTS[obj]})")
    assert found >= 30, "the method headings of docs/api.md were not found"
    assert missing == []


def _config_keys(text: str) -> list[tuple[str, str]]:
    """(section, key) for each key in the tables of "The config file" of docs/daemon.md."""
    part = text.split("## The config file", 1)[1].split("\n## ", 1)[0]
    keys = []
    for block in part.split("\n### ")[1:]:
        heading, _, body = block.partition("\n")
        section = heading.strip().strip("`")
        for row in re.findall(r"^\| (`[^|]+) \|", body, re.MULTILINE):
            for key in re.findall(r"`([\w.]+)`", row):
                if section.startswith("Other"):
                    top, _, sub = key.partition(".")
                    keys.append((top, sub))
                else:
                    keys.append((section, key))
    return keys


def test_config_keys_in_daemon_md_are_keys_the_daemon_reads() -> None:
    """Each key documented under "The config file" is one the config parser knows."""
    from sipd.daemon.config import parse_config
    from sipd.errors import ConfigError

    keys = _config_keys((DOCS / "daemon.md").read_text(encoding="utf-8"))
    assert ("sip", "listen") in keys and ("http", "listen") in keys
    unknown = []
    for section, key in keys:
        doc = f"{section}: ~\n" if not key else f"{section}:\n  {key}: ~\n"
        try:
            parse_config(doc, "doc.yaml")
        except ConfigError as exc:
            if "unknown key" in str(exc):
                unknown.append(f"{section}.{key}" if key else section)
    assert unknown == []


def test_command_line_options_in_daemon_md_exist() -> None:
    """The options table of docs/daemon.md names only options ``twistd sipd`` takes."""
    from sipd.tap import Options

    text = (DOCS / "daemon.md").read_text(encoding="utf-8")
    table = text.split("### Command-line options", 1)[1].split("\n### ", 1)[0]
    documented = set(re.findall(r"^\| `--([\w-]+)`", table, re.MULTILINE))
    known = {long for long, *_ in Options.optParameters}
    assert documented and documented <= known, documented - known


def test_twistd_commands_in_the_docs_leave_no_pid_file_in_the_checkout() -> None:
    """Each twistd command shown says where its pid file goes (``--pidfile=``: none)."""
    commands = [
        (page, line)
        for page in _PAGES
        for _, code in _blocks(page, "sh")
        for line in code.splitlines()
        if re.search(r"\btwistd\b", line) and not line.lstrip().startswith("#")
    ]
    assert commands, "README.md should show how to start the daemon"
    careless = [
        f"{page.relative_to(ROOT)}: {line}" for page, line in commands if "--pidfile" not in line
    ]
    assert careless == []
