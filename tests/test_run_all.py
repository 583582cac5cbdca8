"""scripts/run_all.py re-runs notebooks, keeps executed copies and reports a summary."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("run_all", REPO / "scripts" / "run_all.py")
run_all = importlib.util.module_from_spec(_spec)
sys.modules["run_all"] = run_all  # dataclasses look their module up there
_spec.loader.exec_module(run_all)


def _write_notebook(path: Path, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.cells.insert(0, nbformat.v4.new_markdown_cell("# synthetic"))
    nbformat.write(nb, path)
    return path


@pytest.fixture
def notebooks(tmp_path):
    folder = tmp_path / "nbs"
    folder.mkdir()
    (folder / "data.txt").write_text("from the notebook folder")
    _write_notebook(
        folder / "00_good.ipynb", "x = 21 * 2", "print('answer', x)", "print(open('data.txt').read())"
    )
    _write_notebook(
        folder / "01_bad.ipynb", "y = 1", "raise ValueError('no such frame: 99')", "print('never')"
    )
    (folder / "notes.ipynb").write_text("not a numbered lesson, never run")
    return folder


def test_one_passing_one_failing(notebooks, tmp_path, capsys):
    out = tmp_path / "out"
    code = run_all.main(["--notebooks", str(notebooks), "--out", str(out), "--timeout", "60"])
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["00_good.ipynb", "01_bad.ipynb"]  # no temporary files

    good = nbformat.read(out / "00_good.ipynb", as_version=4)
    code_cells = [c for c in good.cells if c.cell_type == "code"]
    assert len(good.cells) == 4  # the peak-memory probe is not kept
    assert [o["text"] for o in code_cells[1].outputs] == ["answer 42\n"]
    assert [o["text"] for o in code_cells[2].outputs] == ["from the notebook folder\n"]  # cwd = its folder

    bad = nbformat.read(out / "01_bad.ipynb", as_version=4)
    errors = [o for c in bad.cells if c.cell_type == "code" for o in c.outputs if o["output_type"] == "error"]
    assert [(e["ename"], e["evalue"]) for e in errors] == [("ValueError", "no such frame: 99")]
    assert bad.cells[-1].outputs == []  # stopped at the error

    printed = capsys.readouterr().out
    assert "| notebook | seconds | result | peak GPU memory |" in printed
    assert "| 00_good |" in printed and "| passed | - |" in printed
    assert "| 01_bad |" in printed and "| FAILED | - |" in printed
    assert "01_bad failed: ValueError: no such frame: 99" in printed
    assert "1 passed, 1 failed." in printed
    assert "Model: " in printed


def test_run_notebook_result(notebooks, tmp_path):
    bad = run_all.run_notebook(notebooks / "01_bad.ipynb", tmp_path / "out", timeout=60)
    assert (bad.name, bad.ok, bad.error, bad.peak_gpu_gb) == (
        "01_bad",
        False,
        "ValueError: no such frame: 99",
        None,
    )
    assert bad.seconds > 0


def test_peak_gpu_memory_is_asked_from_the_kernel(tmp_path):
    """No GPU here: the notebook stands in a torch whose CUDA says 3 GiB peaked, as a GPU kernel would."""
    fake_torch = (
        "import sys, types\n"
        "cuda = types.SimpleNamespace(is_available=lambda: True, max_memory_allocated=lambda: 3 * 2**30)\n"
        "sys.modules['torch'] = types.SimpleNamespace(cuda=cuda)"
    )
    _write_notebook(tmp_path / "04_gpu.ipynb", fake_torch)
    result = run_all.run_notebook(tmp_path / "04_gpu.ipynb", tmp_path / "out", timeout=60)
    assert (result.ok, result.peak_gpu_gb) == (True, 3.0)
    assert len(nbformat.read(tmp_path / "out" / "04_gpu.ipynb", as_version=4).cells) == 2  # probe removed


def test_only_the_passing_one_exits_zero(notebooks, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_all.main(["--notebooks", str(notebooks), "--only", "00_good", "--out", str(out)]) == 0
    assert [p.name for p in out.iterdir()] == ["00_good.ipynb"]
    assert "1 passed, 0 failed." in capsys.readouterr().out


def test_cell_timeout_fails_the_notebook(tmp_path):
    _write_notebook(tmp_path / "02_slow.ipynb", "import time\ntime.sleep(30)")
    result = run_all.run_notebook(tmp_path / "02_slow.ipynb", tmp_path / "out", timeout=2)
    assert not result.ok and result.error == "CellTimeoutError: a cell ran longer than 2 s (raise --timeout)"
    assert result.peak_gpu_gb is None
    assert (tmp_path / "out" / "02_slow.ipynb").exists()


def test_unreadable_notebook_is_reported(tmp_path):
    (tmp_path / "03_broken.ipynb").write_text("{not json")
    result = run_all.run_notebook(tmp_path / "03_broken.ipynb", tmp_path / "out", timeout=60)
    assert not result.ok and result.error.startswith(f"cannot read {tmp_path / '03_broken.ipynb'}")


def test_only_that_matches_nothing_is_an_error(notebooks, tmp_path, capsys):
    assert run_all.main(["--notebooks", str(notebooks), "--only", "99_nothing", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--only 99_nothing matches no notebook" in err and "00_good, 01_bad" in err


def test_bad_timeout_is_an_error(capsys):
    with pytest.raises(SystemExit):
        run_all.main(["--timeout", "0"])
    assert "must be > 0 seconds, got 0" in capsys.readouterr().err


def test_summary_table_formats_gpu_memory():
    table = run_all.summary_table([run_all.Result("05_video_tracking", 12.34, True, None, 15.678)])
    assert "| 05_video_tracking | 12.3 | passed | 15.7 GiB |" in table


def test_real_setup_notebook_runs_on_the_tiny_model(tiny_model_path, tmp_path):
    """`make run-all` works on the real notebooks; nbval runs all of them, so one is enough here."""
    if not (REPO / "notebooks" / "00_setup.ipynb").exists():
        pytest.skip("notebooks/00_setup.ipynb does not exist yet")
    out = tmp_path / "out"
    assert run_all.main(["--only", "00_setup", "--out", str(out)]) == 0
    executed = nbformat.read(out / "00_setup.ipynb", as_version=4)
    code_cells = [c for c in executed.cells if c.cell_type == "code"]
    assert code_cells and all(c.execution_count for c in code_cells)
    assert any(c.outputs for c in code_cells)
    assert not any(o["output_type"] == "error" for c in code_cells for o in c.outputs)
