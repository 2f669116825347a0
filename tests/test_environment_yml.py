"""environment.yml (conda) lists the same packages as pyproject.toml (pip)."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"torch": "pytorch-cpu"}  # pip name -> conda-forge name where they differ


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower()


def pip_packages() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    extras = project["optional-dependencies"]
    for extra in ("course", "dev"):
        reqs += [r for r in extras[extra] if not r.startswith("metalearn-edu")]
    return {CONDA_NAMES.get(_name(r), _name(r)) for r in reqs}


def conda_packages() -> set[str]:
    names, in_pip = set(), False
    for line in (ROOT / "environment.yml").read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("- pip:"):
            in_pip = True
            continue
        if in_pip and line.startswith("      - "):
            continue
        in_pip = False
        if line.startswith("  - ") and not stripped.startswith("- conda-forge"):
            names.add(_name(stripped[2:]))
    return names - {"python", "pip"}


def test_environment_yml_matches_pyproject():
    pip, conda = pip_packages(), conda_packages()
    assert pip == conda, f"only in pyproject: {sorted(pip - conda)}; only in environment.yml: {sorted(conda - pip)}"


def test_environment_yml_uses_conda_forge_cpu_torch_and_installs_the_package():
    text = (ROOT / "environment.yml").read_text()
    assert "conda-forge" in text and "pytorch-cpu" in text and "- -e ." in text
