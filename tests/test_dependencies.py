"""Every dependency is declared once where it belongs, and nothing is declared that nothing uses."""

from __future__ import annotations

import ast
import json
import re
import sys
from importlib.metadata import packages_distributions

import pytest

from molmo_nb_utils.paths import REPO_ROOT

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

# Needed though never imported by name: torch loads torchvision's operators for the processors,
# transformers uses accelerate for device_map and bitsandbytes for quantization; TrackEval's J&F imports
# scikit-image only when it scores (a reader without it met ModuleNotFoundError in lesson 10); Jupyter itself.
NOT_IMPORTED = {"torchvision", "accelerate", "bitsandbytes", "scikit-image", "jupyterlab", "ipykernel"}


def _names(path) -> set[str]:
    """Normalised distribution names listed in a requirements file or pyproject dependency list."""
    return {
        re.split(r"[<>=!~;\[ ]", line.strip())[0].lower().replace("_", "-") for line in path if line.strip()
    }


def _requirements(name: str) -> set[str]:
    lines = (REPO_ROOT / name).read_text().splitlines()
    return _names(line for line in lines if line.strip() and not line.lstrip().startswith(("#", "-r")))


def _pyproject() -> set[str]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    return _names(project["dependencies"]).union(*map(_names, project["optional-dependencies"].values()))


def _third_party_imports(sources) -> set[str]:
    """Distribution names of the top-level modules imported by ``sources`` (python texts)."""
    to_dist = packages_distributions()
    found = set()
    for text in sources:
        for node in ast.walk(ast.parse(text)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                modules = [node.module]
            for module in modules:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top in ("molmo_nb_utils", "__future__"):
                    continue
                found.add(_one_distribution(to_dist.get(top, [top])))
    return found


def _one_distribution(names: list[str]) -> str:
    """The distribution an import stands for. Where several provide one module (cv2 comes with
    opencv-python and opencv-python-headless, and a dev tool may pull in the other), the one we declare."""
    names = sorted({n.lower().replace("_", "-") for n in names})
    declared = _requirements("requirements.txt")
    return next((n for n in names if n in declared), names[0])


def _package_sources():
    return [p.read_text() for p in (REPO_ROOT / "molmo_nb_utils").rglob("*.py")]


def _notebook_sources():
    for path in (REPO_ROOT / "notebooks").glob("*.ipynb"):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code":
                lines = "".join(cell["source"]).splitlines()
                yield "\n".join(line for line in lines if not line.lstrip().startswith(("!", "%")))


def test_the_package_declares_what_it_imports():
    imported = _third_party_imports(_package_sources())
    declared = _pyproject()
    assert imported - {"ipython"} <= declared, f"imported but not in pyproject.toml: {imported - declared}"
    assert declared - NOT_IMPORTED <= imported, f"declared but never imported: {declared - imported}"


def test_readers_get_what_the_package_and_notebooks_need_and_nothing_else():
    reader = _requirements("requirements.txt")
    assert _pyproject() <= reader
    used = _third_party_imports([*_package_sources(), *_notebook_sources()]) | NOT_IMPORTED
    assert reader - used == set(), f"in requirements.txt but never used: {reader - used}"
    for dropped in ("imageio", "imageio-ffmpeg", "requests", "decord2", "decord"):
        assert dropped not in reader


def test_tools_are_in_the_dev_file_only():
    dev, reader = _requirements("requirements-dev.txt"), _requirements("requirements.txt")
    assert {"pytest", "nbval", "hypothesis", "ruff", "scikit-video"} <= dev
    assert not dev & reader
    assert "-r requirements.txt" in (REPO_ROOT / "requirements-dev.txt").read_text()


def test_colab_installs_the_package_with_extras_that_name_what_colab_lacks():
    """Colab's set-up cells install ``.[colab,...]`` (make readme writes them): the ``colab`` extra bounds what
    Colab has too old; a lesson's own extras are only where it needs them, each a reader's requirement too."""
    catalog = json.loads((REPO_ROOT / "notebooks" / "catalog.json").read_text())
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert _names(extras["colab"]) == {"transformers", "huggingface-hub"}
    wanted = {e["file"]: set(e.get("colab_extras", [])) for e in catalog["notebooks"]}
    assert wanted["06_fit_your_gpu.ipynb"] == {"quantization"}
    assert "quantization" in wanted["09_fine_tune.ipynb"]
    assert "supervision" in wanted["10_points_to_masks.ipynb"]
    assert "serving" in wanted["13_serving.ipynb"]
    assert set().union(*wanted.values()) <= set(extras) - {"colab"}
    reader = _requirements("requirements.txt")
    assert set().union(*map(_names, extras.values())) <= reader
