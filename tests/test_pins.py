"""The pinned install: constraints.txt pins everything the README's commands install, and .ci/run
runs those commands as the README writes them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    """The normalised project name of a requirement line (PEP 503)."""
    name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement).group(1)
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(path: Path) -> list[str]:
    names = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            names += _requirements(path.parent / line[3:].strip())
        elif line:
            names.append(_name(line))
    return names


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version, f"constraints.txt: {line!r} is not an exact pin"
            pins[_name(name)] = version
    return pins


def test_every_dependency_is_pinned() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = ([_name(r) for r in project["project"]["dependencies"]]
              + [_name(r) for r in project["build-system"]["requires"]]
              + _requirements(ROOT / "requirements-test.txt") + ["pip"])
    pins = _pins()
    assert [n for n in wanted if n not in pins] == []
    assert pins["torch"] == "2.13.0"


def test_ci_runs_the_readme_commands_verbatim() -> None:
    blocks = re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), re.S)
    setup, tests = blocks[0].strip(), blocks[1].strip()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert setup in ci and tests in ci
    assert "-c constraints.txt" in setup and "-c constraints.txt" in tests
