"""Where things live (sample media, the download cache, outputs) and how files get there safely.

One place so that notebooks, tests and scripts agree. ``MOLMO_DATA_DIR`` moves the cache
(for example to a Google Drive folder on Colab). Every file is written through ``atomic_path``,
so a crash or Ctrl-C never leaves a half-written file under a real name.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import os
import re
import tempfile
import unicodedata
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

REPO_ROOT = Path(__file__).resolve().parent.parent
INPUT_DIR = REPO_ROOT / "input"
DATA_DIR = Path(os.environ.get("MOLMO_DATA_DIR", REPO_ROOT / "downloaded_data"))
OUTPUT_DIR = DATA_DIR / "outputs"

_MAX_STEM_BYTES = 100  # file systems allow 255 bytes; leave room for a hash, a counter, ".part"
NAME_MAX = 255  # bytes in one file name on Linux, macOS and Windows file systems
_RANDOM = 8  # characters tempfile.mkstemp puts in a name


def output_path(name: str) -> Path:
    """A path under ``downloaded_data/outputs/``, with its folder created.

    ``name`` may contain folders (``"uploads/cat.jpg"``) but must stay inside the outputs folder:
    a name that would write elsewhere (``"../x"``, an absolute path, a link out) is refused.
    """
    root = OUTPUT_DIR.resolve()
    resolved = (OUTPUT_DIR / name).resolve()
    if Path(name).is_absolute() or resolved == root or not resolved.is_relative_to(root):
        raise ValueError(
            f"output_path({name!r}) would write outside {OUTPUT_DIR}. Pass a file name relative to "
            "that folder, e.g. 'result.png' or 'uploads/cat.jpg', without '..' or a leading '/'."
        )
    path = OUTPUT_DIR / resolved.relative_to(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def clean_filename(name: str, default: str = "file") -> str:
    """A file name that is safe to create anywhere, from an untrusted one (a URL, an upload).

    Keeps letters and digits of any script and the suffix (``.jpg``); drops control and invisible
    formatting characters (U+202E can make ``gpj.exe`` read as ``exe.jpg``); turns anything else,
    path separators included, into ``_``; removes leading dots (hidden files) and limits the length.
    A name with nothing usable left becomes ``default`` plus the suffix (``.jpg`` -> ``file.jpg``).
    """
    name = re.split(r"[/\\]", unicodedata.normalize("NFC", str(name)))[-1]  # last part, any OS
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C")
    name = re.sub(r"_+", "_", "".join(c if _is_plain(c) else "_" for c in name))
    stem, dot, suffix = name.rpartition(".")
    if not dot or not re.fullmatch(r"[A-Za-z0-9]{1,16}", suffix):
        stem, suffix = name, ""
    stem = stem.strip("._-").encode()[:_MAX_STEM_BYTES].decode(errors="ignore").rstrip("._-")
    return (stem or default) + (f".{suffix}" if suffix else "")


def _is_plain(char: str) -> bool:
    return char in "._-" or unicodedata.category(char)[0] in "LNM"  # letters, digits, accents


def save_upload(name: str, content: bytes, folder: Path | None = None) -> Path:
    """Save an uploaded file under a cleaned ``name`` and return its path.

    An earlier upload is never replaced: a second ``cat.jpg`` becomes ``cat-1.jpg``. The default
    folder is ``downloaded_data/outputs/uploads/``.
    """
    folder = Path(folder) if folder is not None else OUTPUT_DIR / "uploads"
    clean = Path(clean_filename(name, default="upload"))
    path, n = folder / clean.name, 0
    while True:
        if not path.exists():
            try:
                with atomic_path(path, overwrite=False) as tmp:
                    tmp.write_bytes(content)
                return path
            except FileExistsError:  # another upload took the name a moment ago
                pass
        n += 1
        path = folder / f"{clean.stem}-{n}{clean.suffix}"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary file next to ``path``; it becomes ``path`` only if the block succeeds.

    The temporary name keeps the suffix, so writers that pick a format by suffix (video) still work.

    An interrupted download, render or export (an error, Ctrl-C) never leaves a half-written file:
    the temporary file is removed, and the final ``os.replace`` is an atomic rename. A killed
    process cannot clean up; ``remove_partial_files`` does it later. With ``overwrite=False`` an
    existing ``path`` is kept and ``FileExistsError`` raised.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{_part_stem(path)}.", suffix=f".part{path.suffix}")
    tmp = Path(name)
    if not try_lock(fd):  # without a lock, keep no handle open: Windows cannot rename an open file
        os.close(fd)
        fd = None
    try:
        yield tmp
        tmp.chmod(0o644)  # mkstemp makes files private; outputs are ordinary files
        if overwrite:
            os.replace(tmp, path)
        else:
            _rename_new(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock, after the rename


def remove_partial_files(path: str | os.PathLike) -> None:
    """Delete what killed processes left of ``atomic_path(path)``; keep files still being written.

    ``atomic_path`` holds a lock on its temporary file while it works; the OS releases the lock when
    the process ends, however it ends. So an unlocked temporary file is a leftover, while a locked
    one belongs to another process writing the same file right now.
    """
    path = Path(path)
    pattern = glob.escape(f".{_part_stem(path)}.") + "*" + glob.escape(f".part{path.suffix}")
    for part in path.parent.glob(pattern):
        if not _in_use(part):
            with contextlib.suppress(OSError):  # gone already, or (Windows) open elsewhere
                part.unlink()


def short_stem(stem: str, reserve: int) -> str:
    """``stem`` if it and ``reserve`` more bytes fit in one file name, else its first bytes and a hash.

    Why: a name the reader chose may be up to 255 bytes long, and what is made beside it (a
    temporary file, a shard) adds to it. The hash of the whole stem keeps two long names that
    begin alike apart, and the same stem always gives the same short one (leftovers can be found).
    """
    raw = os.fsencode(stem)
    if len(raw) + reserve <= NAME_MAX:
        return stem
    digest = hashlib.sha256(raw).hexdigest()[:8]
    keep = max(0, NAME_MAX - reserve - len(digest) - 1)
    return os.fsdecode(raw[:keep]) + "~" + digest


def _part_stem(path: Path) -> str:
    """The stem in ``atomic_path``'s temporary names: ``.<stem>.<random>.part<suffix>`` fits NAME_MAX."""
    return short_stem(path.stem, 2 + _RANDOM + len(os.fsencode(f".part{path.suffix}")))


def file_sha256(path: str | os.PathLike) -> str:
    """A file's sha256, read 1 MiB at a time (a video can be larger than memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def try_lock(fd: int) -> bool | None:
    """Lock an open file for this process until it closes or the process ends, however it ends.

    True: locked; False: another process holds the lock; None: no locks here (Windows, some file
    systems). Writers lock their files, so a reader can tell a live writer from a dead one's leftovers.
    """
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError:
        return None


def _in_use(part: Path) -> bool:
    if fcntl is None:
        return False  # Windows refuses to delete a file another process has open
    try:
        with open(part, "rb") as f:
            return try_lock(f.fileno()) is not True  # held by a writer, or locks unsupported: leave it
    except OSError:  # vanished: nothing to remove
        return True


def _rename_new(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst`` but never replace an existing ``dst``, even one made a moment ago."""
    try:
        os.link(src, dst)  # atomic, and fails if dst exists
    except FileExistsError:
        raise
    except OSError:  # no hard links here (FAT, some network drives): check, then rename
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst)) from None
        os.replace(src, dst)
    else:
        src.unlink()
