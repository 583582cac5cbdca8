"""Never mix, never lose: the reproducers of issue 17, item 1, for the dataset runner."""

from __future__ import annotations

import builtins
import errno
import json
import os
import warnings
from pathlib import Path
from types import SimpleNamespace

import peft
import pytest
import torch
from PIL import Image

from conftest import FakeAsk
from molmo_nb_utils.dataset import (
    draw_result,
    export_coco,
    export_points_csv,
    load_dataset,
    load_results,
    model_identity,
    run_dataset,
)


def _image(path: Path, size=(40, 30), colour=(200, 0, 0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def test_a_file_name_that_is_not_utf8_is_answered_saved_and_read_back(tmp_path):
    folder = tmp_path / "data"
    _image(folder / os.fsdecode(b"caf\xe9.png"))  # a Latin-1 name, as old cameras and zips leave them
    _image(folder / "z.png")
    items = load_dataset(folder)
    ask = FakeAsk()
    results = run_dataset(None, None, items, tmp_path / "out.jsonl", prompt="Point.", ask=ask)
    assert len(ask.asked) == 2 and all(r.error is None for r in results)  # the item after it ran too
    assert [r.key for r in load_results(tmp_path / "out.jsonl")] == [i.key for i in items]
    (tmp_path / "out.jsonl").read_bytes().decode("utf-8")  # the file itself stays valid UTF-8
    again = FakeAsk()
    run_dataset(None, None, items, tmp_path / "out.jsonl", prompt="Point.", ask=again)
    assert again.asked == []  # and resuming recognises it
    assert draw_result(items[0], results[0]).width == 40  # its picture, with the name escaped
    coco = json.loads(export_coco(items, results, tmp_path / "coco.json").read_text(encoding="utf-8"))
    assert coco["images"][0]["file_name"] == items[0].key
    points = export_points_csv(items, results, tmp_path / "points.csv").read_text(encoding="utf-8")
    assert "caf\\udce9.png" in points  # the byte that is not UTF-8, written as Python's escape


@pytest.mark.parametrize(
    ("first", "second"),
    [("/ckpt/a/final", "/ckpt/b/final"), ("allenai/Molmo2-4B", "someone/Molmo2-4B")],
)
def test_models_with_the_same_last_name_do_not_mix(tmp_path, first, second):
    _image(tmp_path / "data" / "a.png")
    _image(tmp_path / "data" / "b.png")
    items = load_dataset(tmp_path / "data")
    out = tmp_path / "out.jsonl"
    run_dataset(SimpleNamespace(name_or_path=first), None, items[:1], out, prompt="Point.", ask=FakeAsk())
    assert load_results(out)[0].settings["model"] == first
    with pytest.raises(
        ValueError, match=rf"another model \(model: '{first}' there, '{second}' now\).*new results file"
    ):
        run_dataset(SimpleNamespace(name_or_path=second), None, items, out, prompt="Point.", ask=FakeAsk())


def _lora(seed: int):
    """A small torch model with a LoRA adapter (the same kind fine_tune returns), its weights from ``seed``."""
    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    base.name_or_path = "allenai/Molmo2-4B"
    model = peft.get_peft_model(
        base, peft.LoraConfig(r=2, target_modules=["0", "2"], init_lora_weights=False)
    )
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn_like(param))
    return model


def test_an_adapter_is_part_of_the_model_identity(tmp_path):
    name, adapter = model_identity(_lora(seed=1))
    assert name == "allenai/Molmo2-4B" and adapter["names"] == ["default"] and len(adapter["sha256"]) == 16
    assert model_identity(_lora(seed=1)) == (name, adapter)  # the same weights: the same identity
    other = model_identity(_lora(seed=2))
    assert other[0] == name and other[1]["sha256"] != adapter["sha256"]
    assert model_identity(SimpleNamespace(name_or_path=name)) == (name, None)  # the base model alone

    _image(tmp_path / "data" / "a.png")
    items = load_dataset(tmp_path / "data")
    out = tmp_path / "out.jsonl"
    run_dataset(_lora(seed=1), None, items, out, prompt="Point.", ask=FakeAsk())
    assert load_results(out)[0].settings["adapter"] == adapter
    with pytest.raises(ValueError, match=r"another model \(adapter: .*new results file"):
        run_dataset(_lora(seed=2), None, items, out, prompt="Point.", ask=FakeAsk())
    with pytest.raises(ValueError, match=r"another model \(adapter: .* there, None now\)"):
        run_dataset(SimpleNamespace(name_or_path=name), None, items, out, prompt="Point.", ask=FakeAsk())


def test_another_folder_with_the_same_names_is_asked_again(tmp_path):
    out = tmp_path / "out.jsonl"
    for k in range(2):
        _image(tmp_path / "first" / f"img_{k}.png", colour=(10 * k, 0, 0))
        _image(tmp_path / "second" / f"img_{k}.png", size=(50, 40), colour=(0, 10 * k, 0))
    run_dataset(None, None, load_dataset(tmp_path / "first"), out, prompt="Point.", ask=FakeAsk())
    ask = FakeAsk()
    results = run_dataset(None, None, load_dataset(tmp_path / "second"), out, prompt="Point.", ask=ask)
    assert ask.asked == ["img_0.png", "img_1.png"]
    assert [r.size for r in results] == [(50, 40), (50, 40)]


def test_a_picture_replaced_in_place_is_asked_again_and_never_drawn_with_its_old_answer(tmp_path):
    out = tmp_path / "out.jsonl"
    path = _image(tmp_path / "data" / "a.png")
    _image(tmp_path / "data" / "b.png")
    items = load_dataset(tmp_path / "data")
    old = run_dataset(None, None, items, out, prompt="Point.", ask=FakeAsk())
    _image(path, size=(80, 60), colour=(0, 0, 200))  # the same name, another picture
    with pytest.raises(ValueError, match=r"a\.png changed since it was answered"):
        draw_result(items[0], old[0])
    ask = FakeAsk()
    new = run_dataset(None, None, items, out, prompt="Point.", ask=ask)
    assert ask.asked == ["a.png"] and new[0].size == (80, 60)
    assert draw_result(items[0], new[0]).width == 80
    copy_same_bytes = tmp_path / "copy"
    copy_same_bytes.mkdir()
    for item in items:  # the same bytes in another folder (new times): nothing to ask again
        (copy_same_bytes / item.key).write_bytes(item.path.read_bytes())
    idle = FakeAsk()
    run_dataset(None, None, load_dataset(copy_same_bytes), out, prompt="Point.", ask=idle)
    assert idle.asked == []


def test_one_file_under_several_spellings_is_listed_once(tmp_path):
    _image(tmp_path / "a.png")
    (tmp_path / "sub").mkdir()
    (tmp_path / "list.json").write_text(json.dumps(["a.png", "./a.png", "sub/../a.png"]))
    with pytest.raises(ValueError, match=r"a\.png is listed twice"):
        load_dataset(tmp_path / "list.json")
    (tmp_path / "list.json").write_text(json.dumps(["./a.png"]))
    assert [i.key for i in load_dataset(tmp_path / "list.json")] == ["a.png"]
    with pytest.raises(ValueError, match="listed twice"):
        load_dataset([tmp_path / "a.png", tmp_path / "sub" / ".." / "a.png"])


@pytest.mark.parametrize("encoding", ["cp1252", "latin-1", "utf-16", "utf-8-sig"])
@pytest.mark.parametrize("kind", ["csv", "json"])
def test_lists_saved_by_spreadsheet_programs_are_read(tmp_path, encoding, kind):
    _image(tmp_path / "café.png")
    if kind == "csv":
        text = "file,label,count\ncafé.png,pièce,2\n"
    else:
        text = json.dumps([{"file": "café.png", "label": "pièce", "count": 2}], ensure_ascii=False)
    (tmp_path / f"list.{kind}").write_bytes(text.encode(encoding))
    (item,) = load_dataset(tmp_path / f"list.{kind}")
    assert (item.key, item.label, item.count) == ("café.png", "pièce", 2)


def test_a_list_that_cannot_be_read_names_the_file_and_what_to_do(tmp_path):
    (tmp_path / "list.csv").write_bytes("file\nimg.png\n".encode("utf-16-le"))  # no byte-order mark
    with pytest.raises(ValueError, match=r"list\.csv looks like UTF-16 .*save it again as 'CSV UTF-8'"):
        load_dataset(tmp_path / "list.csv")
    _image(tmp_path / "Привет.png")
    (tmp_path / "list.csv").write_bytes("file\nПривет.png\n".encode("cp1251"))  # another code page
    with pytest.raises(FileNotFoundError, match=r"read as Windows-1252.*save it as 'CSV UTF-8'"):
        load_dataset(tmp_path / "list.csv")


def test_a_full_disk_stops_the_run_with_a_clear_message_and_loses_nothing(tmp_path, monkeypatch):
    items = load_dataset([_image(tmp_path / f"img_{k}.png") for k in range(3)])
    out = tmp_path / "out.jsonl"
    real_fsync, calls = os.fsync, []

    def full_disk_fsync(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk_fsync)
    with pytest.raises(
        OSError, match=r"the disk is full\. Every answer saved before is safe; free some space"
    ) as err:
        run_dataset(None, None, items, out, prompt="Point.", ask=FakeAsk())
    assert err.value.errno == errno.ENOSPC and "Traceback" not in str(err.value)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert out.read_bytes().count(b"\n") == 1 and out.read_bytes().endswith(b"\n")  # no partial line
    ask = FakeAsk()
    run_dataset(None, None, items, out, prompt="Point.", ask=ask)
    assert ask.asked == ["img_1.png", "img_2.png"]


def test_a_read_only_folder_is_fine_when_nothing_is_left_to_do(tmp_path, monkeypatch):
    items = load_dataset([_image(tmp_path / f"img_{k}.png") for k in range(2)])
    out = tmp_path / "out.jsonl"
    run_dataset(None, None, items[:1], out, prompt="Point.", ask=FakeAsk())
    real_open = builtins.open

    def read_only_open(file, mode="r", *args, **kwargs):  # as a read-only folder would (root ignores chmod)
        if Path(str(file)) == out and any(c in mode for c in "aw+"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", read_only_open)
    (done,) = run_dataset(None, None, items[:1], out, prompt="Point.", ask=FakeAsk())
    assert done.key == items[0].key
    with pytest.raises(PermissionError, match=r"Cannot write the results file .*folder you can write to"):
        run_dataset(None, None, items, out, prompt="Point.", ask=FakeAsk())


def test_ground_truth_outside_the_picture_or_without_a_label_is_refused(tmp_path):
    _image(tmp_path / "a.png", size=(40, 30))
    (tmp_path / "list.json").write_text(json.dumps([{"file": "a.png", "points": [[10, 10], [35, 50]]}]))
    with pytest.raises(ValueError, match=r"item 1 \(a\.png\).*point 2 at \(35, 50\) lies outside the 40x30"):
        load_dataset(tmp_path / "list.json")
    (tmp_path / "list.json").write_text(json.dumps([{"file": "a.png", "label": None}]))
    with pytest.raises(ValueError, match=r"item 1 \(a\.png\): label must be a non-empty text"):
        load_dataset(tmp_path / "list.json")
    (tmp_path / "list.json").write_text(json.dumps({"label": None, "items": [{"file": "a.png"}]}))
    with pytest.raises(ValueError, match=r"top-level 'label' must be a non-empty text"):
        load_dataset(tmp_path / "list.json")


def test_empty_truth_is_warned_of_unless_the_count_says_zero(tmp_path):
    _image(tmp_path / "a.png")
    (tmp_path / "list.json").write_text(json.dumps([{"file": "a.png", "points": []}]))
    with pytest.warns(UserWarning, match=r"item 1 \(a\.png\): its points list nothing and it gives no count"):
        load_dataset(tmp_path / "list.json")
    (tmp_path / "list.json").write_text(json.dumps([{"file": "a.png", "points": [], "count": 0}]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (item,) = load_dataset(tmp_path / "list.json")
    assert item.count == 0
