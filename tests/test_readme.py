"""The README's examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks, "README.md has no python example"
    for block in blocks:
        exec(compile(block, str(README), "exec"), {})
    assert "4128" in capsys.readouterr().out


def test_readme_names_setup_and_test_commands():
    text = README.read_text()
    for marker in ("setup", "test"):
        assert re.search(rf"<!-- {marker} -->\n```bash\n.+?\n```\n<!-- /{marker} -->", text, flags=re.DOTALL)
