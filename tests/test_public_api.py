"""The package's front door: what the notebooks import is exported, and little else."""

from __future__ import annotations

import ast
import json

import molmo_nb_utils
from molmo_nb_utils.paths import REPO_ROOT

# Exported though no notebook imports them: the types a reader catches or gets back.
FOR_READERS = {"Answer", "DownloadError", "ItemResult", "LongVideoAnswer", "ModelLoadError", "OutOfMemoryAdvice",
               "VideoFrames", "VideoInfo", "chunk_vision", "download", "load_results", "TrainingError",
               "BenchmarkItems", "BenchmarkScore", "make_sample_benchmarks", "ServerError", "PictureMasks",
               "Segmentation", "SegmenterLoadError"}  # fmt: skip


def _notebook_imports() -> dict[str, set[str]]:
    """{module: names} of every `from molmo_nb_utils... import ...` in the notebooks' code cells."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO_ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] != "code":
                continue
            lines = "".join(cell["source"]).splitlines()
            code = "\n".join(line for line in lines if not line.lstrip().startswith(("!", "%")))
            for node in ast.walk(ast.parse(code)):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("molmo_nb_utils"):
                    found.setdefault(node.module, set()).update(alias.name for alias in node.names)
    return found


def test_notebooks_import_only_from_the_package_itself():
    imports = _notebook_imports()
    assert set(imports) == {"molmo_nb_utils"}, "notebooks reach into submodules: export the names instead"
    assert imports["molmo_nb_utils"] <= set(molmo_nb_utils.__all__)


def test_every_export_is_used_and_the_list_is_sorted():
    used = _notebook_imports()["molmo_nb_utils"]
    assert set(molmo_nb_utils.__all__) == used | FOR_READERS
    assert molmo_nb_utils.__all__ == sorted(molmo_nb_utils.__all__)
    assert all(hasattr(molmo_nb_utils, name) for name in molmo_nb_utils.__all__)


def test_fine_tuning_is_exported():
    """The names issue 18's acceptance checks call: training_examples, fine_tune, load_adapter."""
    from molmo_nb_utils import training

    for name in ("training_examples", "fine_tune", "load_adapter", "split_items", "estimate_training_memory"):
        assert name in molmo_nb_utils.__all__
    assert (
        molmo_nb_utils.fine_tune is training.fine_tune
        and molmo_nb_utils.load_adapter is training.load_adapter
    )
