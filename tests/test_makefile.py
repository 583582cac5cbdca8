"""The README's commands do what a reader expects, as root (containers, Colab) and as a normal user."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import reader_make_env
from molmo_nb_utils.paths import REPO_ROOT


def _dry_run(*prefix: str) -> str:
    """The commands `make lab` would run (make -n runs nothing); setup is assumed done."""
    result = subprocess.run(
        [*prefix, "make", "-n", "-o", ".venv/.installed", "lab"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        env=reader_make_env(),
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


def _dry(*targets: str, options: tuple[str, ...] = ()) -> str:
    """What `make -n` would run for ``targets`` (nothing is run), as a reader's own make would: without the
    variables an outer make (`make test-latest`, which runs these tests) hands down."""
    done = subprocess.run(
        ["make", "-n", *options, *targets],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        env=reader_make_env(),
    )
    return done.stdout


def test_every_environment_is_installed_with_the_versions_known_to_pass():
    built = _dry("setup", "dev", options=("-B",))
    installs = [line for line in built.splitlines() if "pip install" in line and "-r requirements" in line]
    assert len(installs) == 2 and all("-c constraints.txt" in line for line in installs)
    assert (REPO_ROOT / "constraints.txt").is_file()
    latest = _dry("setup", options=("-B", "CONSTRAINTS="))  # what `make test-latest` builds with
    assert "-r requirements.txt" in latest and "-c " not in latest


def test_the_lessons_run_in_an_environment_made_from_the_readers_requirements_alone():
    reader = _dry("setup", options=("-B",))
    assert ".venv/bin/python -m pip install" in reader
    assert "-r requirements.txt" in reader and "requirements-dev" not in reader
    tools = _dry("dev", options=("-B", "-o", ".venv/.installed"))
    assert ".venv-dev/bin/python -m pip install" in tools and "-r requirements-dev.txt" in tools
    assert ".venv/bin/python -m pip" not in tools  # nothing of the tests goes into the reader's environment
    kernel = " ".join(
        tools.replace("\\\n", " ").split()
    )  # the kernel: the reader's Python, found by the tests only
    assert ".venv/bin/python -m ipykernel install --prefix .venv-dev --name molmo-reader" in kernel
    stamps = ("-o", ".venv/.installed", "-o", ".venv-dev/.installed")
    test = next(line for line in _dry("test", options=stamps).splitlines() if "pytest" in line)
    assert "--nbval-kernel-name molmo-reader" in test and "--nbval-current-env" not in test
    assert f"JUPYTER_PATH={REPO_ROOT}/.venv-dev/share/jupyter" in _dry("test", options=stamps)


def test_the_reader_kernel_has_no_test_tools():
    """Where `make test` runs (the reader's kernel is on JUPYTER_PATH), that kernel's Python lacks every tool
    only requirements-dev.txt installs: a lesson that needs one fails there, as it would for a reader."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec("molmo-reader")
    except NoSuchKernel:
        pytest.skip("not run by `make test` (no molmo-reader kernel on JUPYTER_PATH)")
    probe = "import importlib.util as u; print([m for m in ('pytest', 'nbval', 'hypothesis', 'skvideo') if u.find_spec(m)])"
    done = subprocess.run([spec.argv[0], "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    assert Path(spec.argv[0]).parent.parent.resolve() != Path(sys.prefix).resolve()  # not the tests' own


def test_the_tests_environment_shares_the_readers_packages_instead_of_copying_them():
    """Where `make test` runs (its Python is layered on the reader's by scripts/layer_venv.py), torch and the
    package come from the reader's environment: one copy of torch's CUDA build on disk, not two (a CI
    machine once ran out of disk installing the second)."""
    import torch

    prefix = Path(sys.prefix).resolve()
    if not (Path(sysconfig.get_path("purelib")) / "molmo-reader-env.pth").is_file():
        pytest.skip("not run by `make test` (this Python is not layered on a reader's environment)")
    assert prefix not in Path(torch.__file__).resolve().parents


def test_layering_refuses_what_is_not_a_readers_environment(tmp_path):
    script = str(REPO_ROOT / "scripts" / "layer_venv.py")
    done = subprocess.run([sys.executable, script, str(tmp_path / "missing")], capture_output=True, text=True)
    assert done.returncode != 0 and "no virtual environment there" in done.stderr
    assert "Traceback" not in done.stderr
