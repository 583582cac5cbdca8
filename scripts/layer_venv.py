"""Layer the tests' environment on the reader's, so the two share one copy of torch (``make dev`` runs it).

Why: the lessons must run where only ``requirements.txt`` is installed (a lesson needing a package that only
the tests install must fail as it would for a reader), and the tests need their tools besides. Two full
environments hold two copies of torch's CUDA build, over 7 GB each: a CI machine ran out of disk installing
the second. So the tests' environment holds only the tools, and sees the reader's packages through one
``.pth`` file (``site.addsitedir``, which also runs the reader's own ``.pth`` files: the editable package). pip
in the tests' environment counts the reader's packages as installed; a tool that asks for another version of
one gets its own copy, which comes first on ``sys.path``. Nothing is ever written into the reader's environment.

    DEV_VENV/bin/python scripts/layer_venv.py VENV
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import sysconfig
from pathlib import Path

PTH = "molmo-reader-env.pth"
PROBE = "import sys, sysconfig; print('%d.%d' % sys.version_info[:2]); [print(sysconfig.get_path(k)) for k in ('purelib', 'platlib')]"


def reader_site_dirs(venv: Path) -> list[str]:
    """The site-packages folders of ``venv``, checked to run this very Python version (compiled packages)."""
    python = venv / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"{venv}: no virtual environment there (no {python}); run `make setup` first.")
    done = subprocess.run([str(python), "-c", PROBE], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{python} did not run:\n{done.stderr}")
    version, *dirs = done.stdout.split("\n")[:3]
    ours = "{}.{}".format(*sys.version_info[:2])
    if version != ours:
        raise SystemExit(
            f"{venv} runs Python {version}, this environment {ours}: their compiled packages "
            f"do not mix. Remove {Path(sys.prefix).name} and run `make dev` again with the same python3."
        )
    return list(dict.fromkeys(dirs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("venv", type=Path, help="the reader's environment (make's VENV)")
    args = parser.parse_args(argv)
    dirs = reader_site_dirs(args.venv.resolve())
    if Path(sys.prefix) == Path(sys.base_prefix):
        raise SystemExit("run this with the Python of the tests' virtual environment (make's DEV_VENV)")
    line = "import site; " + "; ".join(f"site.addsitedir({d!r})" for d in dirs) + "\n"
    (Path(sysconfig.get_path("purelib")) / PTH).write_text(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
