"""Re-run every notebook with the current MOLMO_MODEL_ID and keep executed copies (``make run-all``).

The companion to the article: one command shows that every lesson runs top to bottom on this machine,
how long each took and how much GPU memory it peaked at. The committed notebooks stay without outputs;
the executed copies go to ``downloaded_data/outputs/notebooks/``, failing ones included (up to the error).

    .venv-dev/bin/python scripts/run_all.py [--only 03_pointing ...] [--out DIR] [--timeout SECONDS]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from tqdm.auto import tqdm

from molmo_nb_utils.loading import model_id
from molmo_nb_utils.paths import OUTPUT_DIR, atomic_path

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
PEAK_KEY = "run_all_peak_gpu_bytes"
# Runs in the notebook's own kernel after its last cell. torch is only asked if the notebook imported it,
# so a notebook that never touched the GPU does not pay for importing torch here.
PEAK_PROBE = (
    "import json as _json, sys as _sys\n"
    "_torch = _sys.modules.get('torch')\n"
    "_peak = _torch.cuda.max_memory_allocated() if _torch is not None and _torch.cuda.is_available() else None\n"
    f"print(_json.dumps({{{PEAK_KEY!r}: _peak}}))"
)


@dataclass(frozen=True)
class Result:
    name: str
    seconds: float
    ok: bool
    error: str | None = None  # "ExceptionName: message" of the failing cell
    peak_gpu_gb: float | None = None  # GiB (2**30 bytes, like torch.cuda); None without a GPU


def _short_error(err: Exception) -> str:
    """The exception the notebook raised, not nbclient's page of traceback."""
    if isinstance(err, CellExecutionError) and err.ename:
        text = f"{err.ename}: {err.evalue}"
    else:
        text = f"{type(err).__name__}: {str(err).strip()}"
    first = text.splitlines()[0] if text.strip() else type(err).__name__
    return first if len(first) <= 300 else first[:297] + "..."


def _peak_gpu_gb(client: NotebookClient, nb: nbformat.NotebookNode) -> float | None:
    """Ask the still-running kernel for its peak GPU memory; the probe cell is not kept in the notebook."""
    probe = nbformat.v4.new_code_cell(PEAK_PROBE)
    nb.cells.append(probe)
    client.timeout = 60  # the probe is instant; a kernel still stuck in a timed-out cell must not hang us
    try:
        client.execute_cell(probe, len(nb.cells) - 1)
    except Exception:  # dead or stuck kernel: no number rather than no summary
        return None
    finally:
        nb.cells.pop()
    for output in probe.outputs:
        for line in output.get("text", "").splitlines():
            if PEAK_KEY in line:
                peak = json.loads(line)[PEAK_KEY]
                return None if peak is None else peak / 2**30
    return None


def _write_atomic(nb: nbformat.NotebookNode, path: Path) -> None:
    with atomic_path(path) as tmp:
        nbformat.write(nb, tmp)


def run_notebook(path: Path, out_dir: Path, timeout: float) -> Result:
    """Execute one notebook in its own folder and save the executed copy, whether it passed or not."""
    start = time.perf_counter()
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as err:  # not a notebook at all: report it, nothing to save
        return Result(path.stem, 0.0, False, f"cannot read {path}: {_short_error(err)}")
    client = NotebookClient(
        nb,
        timeout=timeout,
        interrupt_on_timeout=True,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    error, peak = None, None
    try:
        with client.setup_kernel():  # keeps the kernel alive after a failure, for the probe
            try:
                client.execute(cleanup_kc=False)
            except Exception as err:
                error = _short_error(err)
                if error.startswith("KeyboardInterrupt"):  # how interrupt_on_timeout ends a cell
                    error = f"CellTimeoutError: a cell ran longer than {timeout:g} s (raise --timeout)"
            seconds = time.perf_counter() - start
            peak = _peak_gpu_gb(client, nb)
    except Exception as err:  # the kernel did not start or died on the way out
        error = error or _short_error(err)
        seconds = time.perf_counter() - start
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(nb, out_dir / path.name)
    return Result(path.stem, round(seconds, 1), error is None, error, peak)


def summary_table(results: list[Result]) -> str:
    """A Markdown table, ready to paste into the article."""
    lines = ["| notebook | seconds | result | peak GPU memory |", "|---|---:|---|---:|"]
    for r in results:
        peak = "-" if r.peak_gpu_gb is None else f"{r.peak_gpu_gb:.1f} GiB"
        lines.append(f"| {r.name} | {r.seconds:.1f} | {'passed' if r.ok else 'FAILED'} | {peak} |")
    lines += [f"\n{r.name} failed: {r.error}" for r in results if not r.ok]
    return "\n".join(lines)


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0 seconds, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="run notebooks whose file name contains NAME (repeatable), e.g. 03_pointing",
    )
    parser.add_argument(
        "--out", type=Path, default=OUTPUT_DIR / "notebooks", help="folder for executed copies"
    )
    parser.add_argument("--timeout", type=_positive, default=1800.0, help="seconds per cell (default 1800)")
    parser.add_argument("--notebooks", type=Path, default=NOTEBOOKS_DIR, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    paths = sorted(args.notebooks.glob("[0-9][0-9]_*.ipynb"))
    if args.only:
        unmatched = [n for n in args.only if not any(n in p.name for p in paths)]
        if unmatched:
            names = ", ".join(p.stem for p in paths) or "none"
            print(
                f"--only {' '.join(unmatched)} matches no notebook in {args.notebooks} (there are: {names})",
                file=sys.stderr,
            )
            return 2
        paths = [p for p in paths if any(n in p.name for n in args.only)]
    if not paths:
        print(f"No NN_name.ipynb notebooks in {args.notebooks}", file=sys.stderr)
        return 2

    print(f"Model: {model_id()} (set MOLMO_MODEL_ID to change it)")
    print(f"Executed copies go to {args.out}")
    results = []
    with tqdm(paths, desc="notebooks", unit="nb") as bar:
        for path in bar:
            bar.set_postfix_str(path.stem)
            result = run_notebook(path, args.out, args.timeout)
            tqdm.write(f"{path.stem}: {'passed' if result.ok else 'FAILED'} in {result.seconds:.1f} s")
            results.append(result)
    print()
    print(summary_table(results))
    failed = sum(not r.ok for r in results)
    print(f"\n{len(results) - failed} passed, {failed} failed.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
