"""The Colab set-up cell: a no-op elsewhere, and on Colab it clones, installs, or stops with the reason.

Colab is simulated: the cell's code runs in a fresh Python with a stand-in ``google.colab`` module, the
clone goes to a temporary folder instead of ``/content/...``, and ``python -m pip`` is a stand-in on
``PYTHONPATH`` that records what it was asked and succeeds or fails as told. git is the real one.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import tomllib

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("make_readme_table", REPO / "scripts" / "make_readme_table.py")
mrt = importlib.util.module_from_spec(_spec)
sys.modules["make_readme_table"] = mrt
_spec.loader.exec_module(mrt)

CATALOG = json.loads((REPO / "notebooks" / "catalog.json").read_text(encoding="utf-8"))
ENTRIES = {entry["file"]: entry for entry in CATALOG["notebooks"]}
FAKE_PIP = """
import json, os, sys
with open(os.environ["FAKE_PIP_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
if os.environ.get("FAKE_PIP_FAIL"):
    sys.stderr.write("ERROR: No matching distribution found for molmo-utils>=0.0.1\\n")
    sys.exit(1)
"""
DRIVER = """
import sys, types
if sys.argv[1] == "colab":
    sys.modules["google.colab"] = types.ModuleType("google.colab")
exec(compile(open(sys.argv[2]).read(), "setup-cell", "exec"))
print("sys.path[0] =", sys.path[0])
"""


def _setup_source(file: str) -> str:
    nb = nbformat.read(REPO / "notebooks" / file, as_version=4)
    return nb.cells[mrt._setup_index(nb)].source


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def colab(tmp_path):
    """Runs a set-up cell's code as on Colab (``colab=True``) or elsewhere; returns (result, pip calls, folder)."""
    pip_dir = tmp_path / "fake_pip" / "pip"
    pip_dir.mkdir(parents=True)
    (pip_dir / "__init__.py").write_text("")
    (pip_dir / "__main__.py").write_text(FAKE_PIP)
    log = tmp_path / "pip.log"
    folder = tmp_path / "content" / "molmo2-notebooks"
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)

    def run(source: str, *, colab: bool = True, repository: str | None = None, pip_fails: bool = False):
        repo_url = f"https://github.com/{CATALOG['repository']}"
        content = f"/content/{CATALOG['repository'].split('/')[1]}"
        assert source.count(f'"{repo_url}"') == 1 and source.count(f'"{content}"') == 1
        source = source.replace(f'"{content}"', repr(str(folder)))
        if repository is not None:
            source = source.replace(f'"{repo_url}"', repr(repository))
        cell = tmp_path / "cell.py"
        cell.write_text(source)
        env = {
            **os.environ,
            "PYTHONPATH": str(pip_dir.parent),
            "FAKE_PIP_LOG": str(log),
            "GIT_CONFIG_NOSYSTEM": "1",
        }
        env.pop("FAKE_PIP_FAIL", None)
        if pip_fails:
            env["FAKE_PIP_FAIL"] = "1"
        result = subprocess.run(
            [sys.executable, str(driver), "colab" if colab else "local", str(cell)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        return result, calls, folder

    return run


@pytest.fixture
def local_repo(tmp_path):
    """A git repository to clone instead of GitHub, on branch ``main``."""
    repo = tmp_path / "published"
    repo.mkdir()
    _git("init", "-q", "-b", CATALOG["branch"], cwd=repo)
    (repo / "marker.txt").write_text("cloned\n")
    _git("add", "marker.txt", cwd=repo)
    _git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "x", cwd=repo)
    return repo


needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def test_off_colab_the_cell_does_nothing(colab):
    result, calls, folder = colab(_setup_source("00_setup.ipynb"), colab=False)
    assert result.returncode == 0, result.stderr
    assert calls == [] and not folder.exists()
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sys.path[0] =")  # only the driver's line: silent
    assert str(folder) not in result.stdout and result.stderr == ""


@needs_git
def test_a_failed_clone_stops_with_the_reason_and_what_to_do(colab, tmp_path):
    result, calls, folder = colab(_setup_source("00_setup.ipynb"), repository=str(tmp_path / "no-such-repo"))
    assert result.returncode != 0
    assert (
        "RuntimeError: git clone" in result.stderr
        and "failed; online? Then rerun this cell." in result.stderr
    )
    assert "no-such-repo" in result.stderr and "does not exist" in result.stderr  # git's own words
    assert calls == [] and "sys.path[0]" not in result.stdout  # stopped before installing anything


@needs_git
def test_a_failed_install_stops_with_pips_reason(colab, local_repo):
    result, calls, folder = colab(_setup_source("00_setup.ipynb"), repository=str(local_repo), pip_fails=True)
    assert result.returncode != 0
    assert "-m pip install -q -e" in result.stderr and "failed; online?" in result.stderr
    assert "No matching distribution found" in result.stderr  # pip's own words
    assert (folder / "marker.txt").exists() and len(calls) == 1
    assert "sys.path[0]" not in result.stdout


@needs_git
@pytest.mark.parametrize("file", ["00_setup.ipynb", "06_fit_your_gpu.ipynb"])
def test_on_colab_it_clones_installs_the_package_with_its_colab_extras_and_can_run_again(
    colab, local_repo, file
):
    result, calls, folder = colab(_setup_source(file), repository=str(local_repo))
    assert result.returncode == 0, result.stderr
    assert (folder / "marker.txt").read_text() == "cloned\n"
    extras = ",".join(["colab", *ENTRIES[file].get("colab_extras", [])])
    assert calls == [["install", "-q", "-e", f"{folder}[{extras}]"]]
    assert f"sys.path[0] = {folder}" in result.stdout  # importable in this session, before any restart
    again, calls, _ = colab(_setup_source(file), repository=str(local_repo))
    assert again.returncode == 0, again.stderr  # the clone is there: not cloned twice, installed again
    assert len(calls) == 2


@pytest.mark.parametrize("file", sorted(ENTRIES))
def test_the_set_up_cell_is_a_few_plain_lines(file):
    """The first code a reader meets: a handful of statements, no walrus, no slicing of a list of steps."""
    source = _setup_source(file)
    code = [line for line in source.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert len(code) <= 12, source
    assert ":=" not in source and ")[" not in source


def test_06_installs_bitsandbytes_for_its_4bit_section():
    from transformers.utils.import_utils import BITSANDBYTES_MIN_VERSION

    assert ENTRIES["06_fit_your_gpu.ipynb"]["colab_extras"] == ["quantization"]
    bnb = next(r for r in map(_requirement, _extras()["quantization"]) if r.name == "bitsandbytes")
    # no version below what transformers' 4-bit loading accepts
    assert (
        not any(v in bnb.specifier for v in ("0.45.0", "0.46.0"))
        and BITSANDBYTES_MIN_VERSION in bnb.specifier
    )
    assert "[colab,quantization]" in _setup_source("06_fit_your_gpu.ipynb")
    assert "quantization" not in _setup_source("00_setup.ipynb")


def _extras() -> dict[str, list[str]]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def _requirement(text: str):
    from packaging.requirements import Requirement

    return Requirement(text)


def test_colab_bounds_admit_what_transformers_needs_and_stop_before_the_next_major():
    """transformers 5.20 is the first with Molmo2; it needs huggingface_hub >= 1.31 (5.25 needs 2.x), so Colab's
    0.x must go; the bound stops before a major release nothing has been tried with (pip would otherwise take the
    newest). Read from the installed metadata."""
    from importlib.metadata import requires, version

    from packaging.version import Version

    ours = {_requirement(p).name.replace("_", "-"): _requirement(p) for p in _extras()["colab"]}
    assert version("transformers") in ours["transformers"].specifier
    assert Version("5.19.0") not in ours["transformers"].specifier  # no Molmo2 before 5.20
    needed = next(
        _requirement(r) for r in requires("transformers") if r.lower().startswith("huggingface-hub")
    )
    hub = ours["huggingface-hub"].specifier
    assert version("huggingface_hub") in hub and version("huggingface_hub") in needed.specifier
    assert "0.36.0" not in hub and "3.0.0" not in hub


@pytest.mark.parametrize("file", sorted(ENTRIES))
def test_each_notebooks_badge_and_set_up_cell_follow_the_catalog(file):
    problems = mrt.notebook_problems(CATALOG, only=[file])
    assert problems == [], "\n".join(problems)


def test_the_readme_badges_follow_the_catalog():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert mrt._url_problems(readme, CATALOG, "README.md") == []
    for file in ENTRIES:
        assert mrt.colab_badge(CATALOG, file) in readme
