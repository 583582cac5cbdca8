"""paths.py: outputs stay in their folder, untrusted names are cleaned, uploads never replace each other."""

from __future__ import annotations

import pytest

from molmo_nb_utils import paths
from molmo_nb_utils.paths import atomic_path, clean_filename, output_path, remove_partial_files, save_upload


@pytest.fixture
def outputs(tmp_path, monkeypatch):
    folder = tmp_path / "outputs"
    monkeypatch.setattr(paths, "OUTPUT_DIR", folder)
    return folder


# ---------------------------------------------------------------------------------------------
# output_path


def test_output_path_inside(outputs):
    assert output_path("result.png") == outputs / "result.png"
    assert output_path("uploads/cat.jpg") == outputs / "uploads" / "cat.jpg"
    assert (outputs / "uploads").is_dir()
    assert output_path("a/../b.png") == outputs / "b.png"  # still inside


@pytest.mark.parametrize("name", ["../x.png", "../../etc/passwd", "a/../../x.png", "/etc/passwd", "", "."])
def test_output_path_refuses_names_that_leave_the_folder(outputs, name):
    with pytest.raises(ValueError, match="would write outside .*outputs.*without '\\.\\.' or a leading '/'"):
        output_path(name)
    assert not (outputs.parent / "x.png").exists()


def test_output_path_refuses_a_link_that_leads_out(outputs, tmp_path):
    outputs.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (outputs / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="would write outside"):
        output_path("link/x.png")


# ---------------------------------------------------------------------------------------------
# clean_filename


@pytest.mark.parametrize(
    "name, clean",
    [
        ("cat.jpg", "cat.jpg"),
        ("my photo.jpg", "my_photo.jpg"),
        ("what?.jpg", "what.jpg"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\Cat.JPG", "Cat.JPG"),  # a Windows path, from a browser upload
        ("invoice\u202egpj.exe", "invoicegpj.exe"),  # right-to-left override: showed as "invoiceexe.jpg"
        ("zero\u200bwidth\ufeff.png", "zerowidth.png"),  # invisible format characters
        ("tab\tnew\nline\x00.png", "tabnewline.png"),  # control characters
        ("ka\u0308tzchen.jpg", "kätzchen.jpg"),  # decomposed umlaut (macOS) composed
        ("猫.jpg", "猫.jpg"),
        ("archive.tar.gz", "archive.tar.gz"),
        (".bashrc", "file.bashrc"),  # never a hidden file
        ("...hidden.mp4", "hidden.mp4"),
        ("-rf .mp4", "rf.mp4"),
        (".jpg", "file.jpg"),
        ("\u202e.mp4", "file.mp4"),
        ("../../", "file"),
        ("..", "file"),
        ("", "file"),
        ("clip.mp4\u202e", "clip.mp4"),
        ("name.not a suffix", "name.not_a_suffix"),
    ],
)
def test_clean_filename(name, clean):
    assert clean_filename(name) == clean


def test_clean_filename_limits_the_length_and_keeps_the_suffix():
    long = clean_filename("x" * 300 + ".mp4")
    assert long == "x" * 100 + ".mp4"
    umlauts = clean_filename("ä" * 300 + ".jpg")  # 2 bytes each in UTF-8
    assert umlauts == "ä" * 50 + ".jpg"
    assert len(clean_filename("猫" * 300 + ".jpg").encode()) <= 100 + 4  # no broken character


def test_clean_filename_default():
    assert clean_filename(".jpg", default="upload") == "upload.jpg"


# ---------------------------------------------------------------------------------------------
# save_upload


def test_save_upload_default_folder_and_no_overwrite(outputs):
    first = save_upload("cat.jpg", b"first")
    second = save_upload("cat.jpg", b"second")
    third = save_upload("../cat.jpg", b"third")
    assert first == outputs / "uploads" / "cat.jpg"
    assert (second.name, third.name) == ("cat-1.jpg", "cat-2.jpg")
    assert [p.read_bytes() for p in (first, second, third)] == [b"first", b"second", b"third"]
    assert sorted(p.name for p in (outputs / "uploads").iterdir()) == ["cat-1.jpg", "cat-2.jpg", "cat.jpg"]


@pytest.mark.parametrize(
    "name, saved",
    [
        (".jpg", "upload.jpg"),
        ("\u202e.mp4", "upload.mp4"),
        ("../../", "upload"),
        ("../../evil.jpg", "evil.jpg"),
    ],
)
def test_save_upload_odd_names(tmp_path, name, saved):
    folder = tmp_path / "uploads"
    path = save_upload(name, b"data", folder)
    assert path == folder / saved and path.read_bytes() == b"data"
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [saved]


def test_save_upload_that_fails_leaves_nothing(tmp_path):
    folder = tmp_path / "uploads"
    with pytest.raises(TypeError):
        save_upload("cat.jpg", object(), folder)  # not bytes: fails while writing
    assert list(folder.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# atomic_path and its leftovers


def test_atomic_path_without_overwrite_keeps_the_existing_file(tmp_path):
    path = tmp_path / "cat.jpg"
    path.write_bytes(b"old")
    with pytest.raises(FileExistsError), atomic_path(path, overwrite=False) as tmp:
        tmp.write_bytes(b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["cat.jpg"]


def test_remove_partial_files_keeps_one_being_written(tmp_path):
    dest = tmp_path / "clip.mp4"
    dead = tmp_path / ".clip.k1ll3d00.part.mp4"  # what a killed process left
    dead.write_bytes(b"half")
    other = tmp_path / ".other.k1ll3d00.part.mp4"  # another file's: not ours to judge
    other.write_bytes(b"half")
    with atomic_path(dest) as tmp:
        tmp.write_bytes(b"being written")
        remove_partial_files(dest)
        assert tmp.exists()
        assert not dead.exists()
    assert dest.read_bytes() == b"being written"
    assert other.exists()
