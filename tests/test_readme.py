"""The README's examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def test_readme_python_examples_run(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks, "README.md has no python example"
    for block in blocks:
        exec(compile(block, str(README), "exec"), {})
    assert "4128" in capsys.readouterr().out


def test_ci_runs_exactly_the_readme_setup_and_test_commands():
    text = README.read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    for marker in ("setup", "test"):
        block = re.search(rf"<!-- {marker} -->\n```bash\n(.+?)\n```\n<!-- /{marker} -->", text, flags=re.DOTALL)
        assert block, f"README.md lacks its <!-- {marker} --> block"
        expected = f"# README {marker.replace('setup', 'set-up')}\n{block[1]}\n"
        assert expected in ci, f".ci/run must run the README's {marker} commands:\n{block[1]}"
