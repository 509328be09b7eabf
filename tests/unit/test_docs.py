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
