"""asking.py: messages, the released prompt format, chat, and answers that know what the model saw.

Everything runs the real processor and ``generate`` of the tiny Molmo2 (conftest.py).
"""

from __future__ import annotations

import copy
import io
import json

import av
import numpy as np
import pytest
import torch
from jinja2 import TemplateError
from molmo_utils.vision_process import fetch_image, load_video_pyav_noseek
from PIL import Image, ImageFile

from molmo_nb_utils.asking import (
    Answer,
    OutOfMemoryAdvice,
    chat,
    chat_batch,
    prepare_inputs,
    user_message,
    visual_token_count,
)
from molmo_nb_utils.grounding import Point
from molmo_nb_utils.media import sample_frames
from molmo_nb_utils.media import video as video_module


def _noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 255, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def video_path(tmp_path_factory):
    """3 s at 10 fps, 160x120, H.264; frame i is a flat grey of level 8 i."""
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for i in range(30):
            frame = av.VideoFrame.from_ndarray(np.full((120, 160, 3), i * 8, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


# ---------------------------------------------------------------------------------------------
# The released prompt format (issue: the tiny model must write what allenai/Molmo2-4B writes)

IMAGE, VIDEO = {"type": "image"}, {"type": "video"}


def text(value: str) -> dict:
    return {"type": "text", "text": value}


PROMPTS = {
    "one image": (
        [{"role": "user", "content": [IMAGE, text("What is this?")]}],
        "<|image|><|im_start|>user\nWhat is this?<|im_end|>\n<|im_start|>assistant\n",
    ),
    "several images": (
        [{"role": "user", "content": [IMAGE, IMAGE, IMAGE, text("Compare.")]}],
        "Image 1<|image|>Image 2<|image|>Image 3<|image|><|im_start|>user\nCompare.<|im_end|>\n"
        "<|im_start|>assistant\n",
    ),
    "a video": (
        [{"role": "user", "content": [VIDEO, text("What happens?")]}],
        "<|video|><|im_start|>user\nWhat happens?<|im_end|>\n<|im_start|>assistant\n",
    ),
    "text only": (
        [{"role": "user", "content": [text("Hello")]}],
        "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n",
    ),
    "string content": (
        [{"role": "user", "content": "Hello  there"}],
        "<|im_start|>user\nHello  there<|im_end|>\n<|im_start|>assistant\n",
    ),
    "two text items": (
        [{"role": "user", "content": [text("Look closely."), IMAGE, text("How many?")]}],
        "<|image|><|im_start|>user\nLook closely. How many?<|im_end|>\n<|im_start|>assistant\n",
    ),
    "text before the image": (
        [{"role": "user", "content": [text("Describe"), IMAGE]}],
        "<|image|><|im_start|>user\nDescribe<|im_end|>\n<|im_start|>assistant\n",
    ),
    "a follow-up turn": (
        [
            {"role": "user", "content": [IMAGE, text("Q1")]},
            {"role": "assistant", "content": [text("A1")]},
            {"role": "user", "content": [text("Q2")]},
        ],
        "<|image|><|im_start|>user\nQ1<|im_end|>\n <|im_start|>assistant\nA1<|im_end|>\n"
        "<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n",
    ),
    "media in a later turn count too, in order": (
        [
            {"role": "user", "content": [IMAGE, text("Q1")]},
            {"role": "assistant", "content": "A1"},
            {"role": "user", "content": [VIDEO, IMAGE, text("Q2")]},
        ],
        "Image 1<|image|>Image 2<|image|><|video|><|im_start|>user\nQ1<|im_end|>\n <|im_start|>assistant\nA1"
        "<|im_end|>\n<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n",
    ),
}


@pytest.mark.parametrize("case", list(PROMPTS))
def test_prompt_format_matches_the_released_template(tiny_model, case):
    _, processor = tiny_model
    messages, expected = PROMPTS[case]
    assert processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == expected


def test_no_generation_prompt(tiny_model):
    _, processor = tiny_model
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    rendered = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    assert rendered == "<|im_start|>user\nHi<|im_end|>\n <|im_start|>assistant\nHello"


@pytest.mark.parametrize(
    "roles",
    [
        ["system", "user"],
        ["user", "user"],
        ["assistant"],
        ["user", "assistant", "assistant"],
        ["user", "system"],
    ],
)
def test_roles_must_alternate_in_the_template(tiny_model, roles):
    _, processor = tiny_model
    messages = [{"role": role, "content": "x"} for role in roles]
    with pytest.raises(TemplateError, match="roles must alternate"):
        processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@pytest.mark.parametrize(
    "roles", [["system", "user"], ["user", "user"], ["user", "assistant"], ["assistant", "user"], []]
)
def test_chat_explains_the_turn_rule(tiny_model, roles):
    model, processor = tiny_model
    messages = [{"role": role, "content": [text("x")]} for role in roles]
    with pytest.raises(ValueError, match="alternate user, assistant, user.*no system role"):
        chat(model, processor, messages, max_new_tokens=2)


# ---------------------------------------------------------------------------------------------
# user_message


def test_user_message_tells_images_from_videos(video_path, tmp_path):
    image = _noise_image(20, 10)
    seen = sample_frames(video_path, fps=1)
    array = np.zeros((4, 6, 3), np.uint8)
    message = user_message(
        image, "photo.JPG", video_path, "https://example.org/clip.mp4?x=1", seen, array, text="What?"
    )
    assert message["role"] == "user"
    kinds = [item["type"] for item in message["content"]]
    assert kinds == ["image", "image", "video", "video", "video", "image", "text"]
    assert message["content"][0]["image"] is image and message["content"][4]["video"] is seen
    assert message["content"][5]["image"].size == (6, 4)
    assert message["content"][-1] == {"type": "text", "text": "What?"}
    custom = {"type": "video", "video": str(video_path), "fps": 8}
    assert user_message(custom, text="Track.")["content"][0] is custom


def test_user_message_rejects_what_it_cannot_place():
    with pytest.raises(TypeError, match="image or a video"):
        user_message(42, text="?")
    with pytest.raises(TypeError, match="question as a str"):
        user_message(_noise_image(4, 4), text=3)
    with pytest.raises(TypeError, match="needs the question as text="):
        user_message(_noise_image(4, 4), text=None)
    with pytest.raises(ValueError, match="'type' 'image', 'video' or 'text'"):
        user_message({"kind": "image"}, text="?")
    with pytest.raises(ValueError, match="height, width, 3"):
        user_message(np.zeros((4, 4), np.uint8), text="?")


def test_a_question_given_without_text_says_how_to_give_it_issue_31():
    """user_message(image, "Point to ...") is the natural first try: say text=, naming the question."""
    with pytest.raises(TypeError, match=r"text='Point to the cups\.'.*was given as a picture or video"):
        user_message(_noise_image(4, 4), "Point to the cups.")


# ---------------------------------------------------------------------------------------------
# Inputs: the same tokens and pixels as AllenAI's own route (molmo_utils + the processor)


def test_video_inputs_are_exactly_molmo_utils_route(tiny_model, video_path):
    _, processor = tiny_model
    messages = [user_message(video_path, text="What happens?")]
    ours = prepare_inputs(processor, messages)
    frames, metadata = load_video_pyav_noseek({"video": str(video_path), "max_fps": 2, "num_frames": 384})
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [VIDEO, text("What happens?")]}],
        tokenize=False,
        add_generation_prompt=True,
    )
    theirs = processor(
        text=prompt,
        videos=[np.stack(frames)],
        video_metadata=[metadata],
        do_sample_frames=False,
        return_tensors="pt",
    )
    assert torch.equal(ours["input_ids"], theirs["input_ids"])
    assert torch.equal(ours["pixel_values_videos"], theirs["pixel_values_videos"])


def test_image_inputs_are_exactly_molmo_utils_route(tiny_model, tmp_path, monkeypatch):
    _, processor = tiny_model
    # molmo_utils' fetch_image lifts Pillow's size limit and lets truncated images load, for the whole
    # process: put both back after this test, or later tests (test_media's) see a Pillow without limits.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", ImageFile.LOAD_TRUNCATED_IMAGES)
    path = tmp_path / "photo.jpg"
    _noise_image(300, 200).save(path, quality=90)
    ours = prepare_inputs(processor, [user_message(path, text="Point to the cat.")])
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [IMAGE, text("Point to the cat.")]}],
        tokenize=False,
        add_generation_prompt=True,
    )
    theirs = processor(text=prompt, images=[fetch_image({"image": str(path)})], return_tensors="pt")
    assert torch.equal(ours["input_ids"], theirs["input_ids"])
    assert torch.equal(ours["pixel_values"], theirs["pixel_values"])


def test_image_prompt_has_the_real_number_of_visual_tokens(tiny_model):
    model, processor = tiny_model
    inputs = prepare_inputs(processor, [user_message(_noise_image(640, 480), text="Describe.")])
    # By hand: a crop is 378 px = 27 patches of 14 px; 4-patch margins leave a 19-patch (266 px) window.
    # 640x480 minus the 8-patch (112 px) margins is 528x368 -> a 2x2 tiling -> 4 crops + 1 low-res view = 5.
    assert int(inputs["image_num_crops"][0]) == 5
    # Low-res view: 27x27 patches pooled 2x2 -> 14x14 = 196. High-res canvas: 2*266+112 = 644 px = 46
    # patches per side, pooled 2x2 -> 23x23 = 529. Together 725 patch tokens.
    assert visual_token_count(model, inputs) == 196 + 529
    # One <im_col> per row of the high-res view only (the released processor has no columns on low-res).
    col = processor.tokenizer.convert_tokens_to_ids("<im_col>")
    assert int((inputs["input_ids"] == col).sum()) == 23


def test_video_prompt_uses_the_sample_times(tiny_model, video_path):
    model, processor = tiny_model
    messages = [user_message(video_path, text="What happens?")]
    inputs = prepare_inputs(processor, messages)
    # 2 fps over 3 s, and the end: 0.0, 0.5, ..., 3.0 -> 7 frames of 27x27 patches pooled 3x3 -> 9x9 = 81
    assert inputs["video_grids"].tolist() == [[7, 9, 9]]
    assert visual_token_count(model, inputs) == 7 * 81
    prompt = processor.decode(inputs["input_ids"][0])
    for t in ["0.0", "0.5", "1.0", "1.5", "2.0", "2.5", "3.0"]:
        assert f"{t} <im_start>" in prompt
    assert prepare_inputs(processor, messages, fps=1.0)["video_grids"].tolist() == [[4, 9, 9]]
    per_video = [user_message({"type": "video", "video": str(video_path), "max_frames": 3}, text="?")]
    assert prepare_inputs(processor, per_video)["video_grids"].tolist() == [[3, 9, 9]]
    molmo_names = [user_message({"type": "video", "video": str(video_path), "max_fps": 1}, text="?")]
    assert prepare_inputs(processor, molmo_names)["video_grids"].tolist() == [[4, 9, 9]]


def test_one_video_per_question(tiny_model, video_path):
    model, processor = tiny_model
    with pytest.raises(ValueError, match="at most one video per question"):
        chat(model, processor, [user_message(video_path, video_path, text="Compare.")])


def test_file_urls_with_spaces(tiny_model, video_path, tmp_path):
    model, processor = tiny_model
    folder = tmp_path / "sp ace"
    folder.mkdir()
    image = folder / "cat.jpg"
    _noise_image(64, 48).save(image)
    clip = folder / "clip.mp4"
    clip.write_bytes(video_path.read_bytes())
    assert "%20" in image.as_uri()
    assert chat(model, processor, [user_message(image.as_uri(), text="?")], max_new_tokens=2).image_sizes == [
        (64, 48)
    ]
    assert (
        chat(model, processor, [user_message(clip.as_uri(), text="?")], max_new_tokens=2).video.indices[-1]
        == 29
    )


# ---------------------------------------------------------------------------------------------
# chat and its Answer


@pytest.mark.parametrize("kind", ["image", "two_images", "video"])
def test_chat_generates_what_generate_generates(tiny_model, video_path, tmp_path, kind):
    model, processor = tiny_model
    if kind == "video":
        media_items = [video_path]
    else:
        path = tmp_path / "a.png"
        _noise_image(300, 200).save(path)
        media_items = [path] + ([_noise_image(200, 300, seed=1)] if kind == "two_images" else [])
    messages = [user_message(*media_items, text="Point to the cat.")]
    answer = chat(model, processor, messages, max_new_tokens=8)
    assert isinstance(answer, str) and isinstance(answer, Answer)
    inputs = prepare_inputs(processor, messages)
    output = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert output.shape[1] > inputs["input_ids"].shape[1]  # generation ran
    expected = processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    assert answer == expected and answer.text == expected and type(answer.text) is str
    assert answer.prompt_tokens == inputs["input_ids"].shape[1]
    assert answer.visual_tokens == visual_token_count(model, inputs) > 0
    if kind == "video":
        assert answer.images == () and answer.video.timestamps == pytest.approx([0, 0.5, 1, 1.5, 2, 2.5, 3])
        assert answer.video.indices == [0, 5, 10, 15, 20, 25, 29]
    else:
        assert answer.video is None
        assert answer.image_sizes == ([(300, 200), (200, 300)] if kind == "two_images" else [(300, 200)])


def test_a_video_is_decoded_once_per_request(tiny_model, video_path, monkeypatch):
    model, processor = tiny_model
    reads = []
    original = video_module.read_frames
    monkeypatch.setattr(video_module, "read_frames", lambda *args: reads.append(args[2]) or original(*args))
    answer = chat(model, processor, [user_message(video_path, text="?")], fps=1, max_new_tokens=2)
    assert reads == [(0, 10, 20, 29)] and answer.video.indices == [0, 10, 20, 29]
    seen = sample_frames(video_path, fps=1)
    again = chat(model, processor, [user_message(seen, text="?")], max_new_tokens=2)
    assert len(reads) == 2  # sample_frames decoded; chat used those frames
    assert again.video is seen and again == answer


def test_single_message_and_follow_up(tiny_model):
    model, processor = tiny_model
    first = user_message(_noise_image(40, 30), text="What is it?")
    answer = chat(model, processor, first, max_new_tokens=3)
    follow_up = [first, {"role": "assistant", "content": [text(answer)]}, user_message(text="And?")]
    assert isinstance(chat(model, processor, follow_up, max_new_tokens=3), Answer)


def test_streaming_prints_the_answer(tiny_model, capsys):
    model, processor = tiny_model
    messages = [user_message(_noise_image(100, 100), text="What is this?")]
    quiet = chat(model, processor, messages, max_new_tokens=6)
    capsys.readouterr()
    streamed = chat(model, processor, messages, max_new_tokens=6, stream=True)
    printed = capsys.readouterr().out
    assert streamed == quiet
    assert printed.strip() == quiet


def test_points_on_the_right_image():
    small, large = Image.new("RGB", (200, 100)), Image.new("RGB", (400, 300))
    answer = Answer('<points coords="1 1 500 500;2 2 250 750">things</points>', images=[small, large])
    # image 1: 500/1000 of 200 x 100 = (100, 50); image 2: 250/1000 * 400, 750/1000 * 300 = (100, 225)
    assert answer.points() == [Point(1, 100.0, 50.0, image=1), Point(2, 100.0, 225.0, image=2)]
    skipped = []
    assert Answer('<points coords="3 1 10 10">x</points>', images=[small]).points(skipped=skipped) == []
    assert skipped == ["image 3: only 1 image was given (point 1)"]


def test_video_points_land_on_the_frames_shown(video_path):
    seen = sample_frames(video_path, fps=2)  # 160x120, shown at 0, 0.5, ..., 3.0 s
    answer = Answer('<points coords="0.5 1 500 500;3.0 2 100 900;1.3 3 10 10">x</points>', videos=[seen])
    skipped = []
    # 500/1000 of 160 x 120 = (80, 60); 100/1000 * 160 = 16, 900/1000 * 120 = 108. 1.3 s is 0.2 s from
    # the nearest frame shown (1.5 s): the model saw no frame then.
    assert answer.points(skipped=skipped) == [Point(1, 80.0, 60.0, time=0.5), Point(2, 16.0, 108.0, time=3.0)]
    assert skipped == ["time 1.3 s (point 3): no frame was shown at that time"]
    assert seen.frame_at(3.0) == 29


def test_tracks_snap_one_decimal_times_to_the_exact_frames(video_path):
    seen = sample_frames(video_path, fps=8)  # 0, 0.125, 0.25, ... written "0.0", "0.1", "0.2" (0.25 -> 0.2)
    answer = Answer('<tracks coords="0.1 1 500 500;0.2 1 510 500 2 100 100">x</tracks>', videos=[seen])
    tracks = answer.tracks()
    assert [p.time for p in tracks] == [0.125, 0.25, 0.25]
    assert [seen.frame_at(p.time) for p in tracks] == [1, 2, 2]  # floor(10 t)
    assert tracks[0] == Point(1, 80.0, 60.0, time=0.125)


def test_answers_without_media_say_so():
    with pytest.raises(ValueError, match="text only"):
        Answer("Hello").points()
    with pytest.raises(ValueError, match="ask with a video"):
        Answer("<tracks coords='0.0 1 1 1'>x</tracks>", images=[Image.new("RGB", (4, 4))]).tracks()


def test_answer_is_a_plain_string_to_other_code():
    answer = Answer("There are 3 coins.", images=[Image.new("RGB", (4, 4))], prompt_tokens=7)
    assert answer == "There are 3 coins." and answer.upper() == "THERE ARE 3 COINS."
    assert json.dumps(answer) == '"There are 3 coins."'
    clone = copy.deepcopy(answer)
    assert clone == answer and clone.prompt_tokens == 7 and clone.image_sizes == [(4, 4)]


# ---------------------------------------------------------------------------------------------
# Errors


def test_out_of_memory_becomes_advice(tiny_model, monkeypatch):
    model, processor = tiny_model

    def boom(**kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(model, "generate", boom)
    with pytest.raises(OutOfMemoryAdvice, match="ran out of memory.*fewer image crops") as info:
        chat(model, processor, [user_message(_noise_image(64, 64), text="Hi")])
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_missing_video_in_chat(tiny_model, tmp_path):
    model, processor = tiny_model
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        chat(model, processor, [user_message(tmp_path / "nope.mp4", text="?")])


def test_unreadable_video_in_chat(tiny_model, tmp_path):
    model, processor = tiny_model
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video")
    with pytest.raises(ValueError, match="broken.mp4"):
        chat(model, processor, [user_message(bad, text="?")])


@pytest.mark.parametrize("bad", [{"max_new_tokens": 0}, {"max_new_tokens": True}, {"max_crops": 0}])
def test_bad_counts_are_refused_by_name_before_generating(tiny_model, bad):
    model, processor = tiny_model
    (name,) = bad
    messages = [user_message(_noise_image(64, 64), text="Hi")]
    with pytest.raises(ValueError, match=f"{name} must be a whole number >= 1"):
        chat(model, processor, messages, **bad)
    with pytest.raises(ValueError, match=f"{name} must be a whole number >= 1"):
        chat_batch(model, processor, [messages], **bad)


def test_media_item_without_a_source(tiny_model):
    model, processor = tiny_model
    with pytest.raises(ValueError, match="has no source"):
        chat(model, processor, [{"role": "user", "content": [{"type": "image"}, text("?")]}])


def test_bytes_image(tiny_model):
    model, processor = tiny_model
    buffer = io.BytesIO()
    _noise_image(30, 20).save(buffer, format="PNG")
    message = user_message({"type": "image", "image": buffer.getvalue()}, text="?")
    assert chat(model, processor, [message], max_new_tokens=2).image_sizes == [(30, 20)]
