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
# transformers uses accelerate for device_map and bitsandbytes for quantization; Jupyter itself.
NOT_IMPORTED = {"torchvision", "accelerate", "bitsandbytes", "jupyterlab", "ipykernel"}


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
    assert {"pytest", "nbval", "hypothesis", "ruff", "scikit-image"} <= dev
    assert not dev & reader
    assert "-r requirements.txt" in (REPO_ROOT / "requirements-dev.txt").read_text()


def test_colab_installs_only_what_colab_lacks_and_we_list():
    """Colab's set-up cells install the catalog's packages (make readme writes them): a short list of what
    Colab lacks, each one a reader's requirement too; the extras are only where a notebook needs them."""
    catalog = json.loads((REPO_ROOT / "notebooks" / "catalog.json").read_text())

    def names(requirements: list[str]) -> set[str]:
        return {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}

    common = names(catalog["colab_packages"])
    assert common == {"transformers", "huggingface-hub", "molmo-utils", "av", "trackeval"}
    extras = {e["file"]: names(e.get("colab_extras", [])) for e in catalog["notebooks"]}
    assert extras["06_fit_your_gpu.ipynb"] == {"bitsandbytes"}
    assert "peft" in extras["09_fine_tune.ipynb"]
    assert extras["10_points_to_masks.ipynb"] == {"supervision"}
    for name in ("03_pointing.ipynb", "04_video_pointing.ipynb", "05_video_tracking.ipynb"):  # constrain=
        assert extras[name] == {"outlines-core"}
    assert {n for n, x in extras.items() if x} == {
        "03_pointing.ipynb",
        "04_video_pointing.ipynb",
        "05_video_tracking.ipynb",
        "06_fit_your_gpu.ipynb",
        "09_fine_tune.ipynb",
        "10_points_to_masks.ipynb",
    }
    reader = _requirements("requirements.txt")
    assert common | set().union(*extras.values()) <= reader
