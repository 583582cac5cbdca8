"""The README's commands do what a reader expects, as root (containers, Colab) and as a normal user."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from molmo_nb_utils.paths import REPO_ROOT


def _dry_run(*prefix: str) -> str:
    """The commands `make lab` would run (make -n runs nothing); setup is assumed done."""
    result = subprocess.run(
        [*prefix, "make", "-n", "-o", ".venv/.installed", "lab"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return next(line for line in result.stdout.splitlines() if "jupyter lab" in line)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, as in containers and on Colab")
def test_make_lab_allows_root_only_for_root():
    assert "--allow-root" in _dry_run()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv is not installed")
    assert "--allow-root" not in _dry_run(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups")


@pytest.mark.skipif(os.geteuid() == 0, reason="runs as a normal user")
def test_make_lab_as_a_normal_user():
    assert "--allow-root" not in _dry_run()
