"""The README's and the docs' examples run as written, and CI runs the README's own set-up and test commands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md"))]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.DOTALL)


@pytest.mark.parametrize("document", [path for path in DOCUMENTS if python_blocks(path)], ids=lambda path: path.name)
def test_python_examples_run(document, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for block in python_blocks(document):
        exec(compile(block, str(document), "exec"), {})


def test_memory_example_prints_the_memory_size(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(python_blocks(ROOT / "docs" / "memory.md")[0], "docs/memory.md", "exec"), {})
    assert capsys.readouterr().out.strip() == "4128"


def test_readme_links_point_to_files():
    for document in DOCUMENTS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", document.read_text()):
            if "://" not in target:
                assert (document.parent / target).exists(), f"{document.name} links to a missing {target}"


def test_ci_runs_exactly_the_readme_setup_and_test_commands():
    text = README.read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    for marker in ("setup", "test"):
        block = re.search(rf"<!-- {marker} -->\n```bash\n(.+?)\n```\n<!-- /{marker} -->", text, flags=re.DOTALL)
        assert block, f"README.md lacks its <!-- {marker} --> block"
        expected = f"# README {marker.replace('setup', 'set-up')}\n{block[1]}\n"
        assert expected in ci, f".ci/run must run the README's {marker} commands:\n{block[1]}"
