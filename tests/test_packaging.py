"""The package installs under one import name, with its configs as package data."""

from __future__ import annotations

import pytest
from pathlib import Path

from ebmm_rl.agents import agent_names, get_agent
from ebmm_rl.runs.config import config_path

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
ROOT = Path(__file__).resolve().parents[1]


def setuptools_settings() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_folder_is_installed_under_ebmm_rl():
    settings = setuptools_settings()
    folders = {package: Path(*package.split(".")) for package in settings["packages"]}
    folders.update({package: Path(folder) for package, folder in settings["package-dir"].items()})
    assert all(package == "ebmm_rl" or package.startswith("ebmm_rl.") for package in folders)
    installed = {(ROOT / folder).resolve() for folder in folders.values()}
    on_disk = {
        init.parent.resolve() for top in ("ebmm_rl", "agents", "envs", "configs") for init in (ROOT / top).rglob("__init__.py")
    }
    assert on_disk == installed, f"package folders not installed: {sorted(map(str, on_disk - installed))}"


def test_every_agent_has_its_config_in_the_package_data():
    patterns = setuptools_settings()["package-data"]["ebmm_rl.configs"]
    shipped = {path.name for pattern in patterns for path in (ROOT / "configs").glob(pattern)}
    for name in agent_names():
        path = config_path(get_agent(name))
        assert path.is_file() and path.name in shipped, f"{name}: {path} is not shipped as package data"
