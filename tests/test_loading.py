"""The tiny Molmo2 loads and generates through the real transformers code paths."""

from __future__ import annotations

import hashlib

import av
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from molmo_nb_utils import loading
from molmo_nb_utils.loading import (
    ModelLoadError,
    OutOfMemoryAdvice,
    chat,
    load_model,
    prepare_inputs,
    visual_token_count,
)
from molmo_nb_utils.tiny import build_tiny_molmo2


def _noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 255, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def video_path(tmp_path_factory):
    """3 s at 10 fps, 160x120, H.264."""
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for i in range(30):
            frame = av.VideoFrame.from_ndarray(np.full((120, 160, 3), i * 8, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def test_tiny_checkpoint_loads_through_auto_classes(tiny_model_path):
    processor = AutoProcessor.from_pretrained(tiny_model_path)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_path, dtype=torch.float32)
    assert type(processor).__name__ == "Molmo2Processor"
    assert type(model).__name__ == "Molmo2ForConditionalGeneration"
    assert model.config.model_type == "molmo2"
    n_params = sum(p.numel() for p in model.parameters())
    assert 50_000 < n_params < 1_000_000
    # The config's token ids are the tokenizer's.
    tok = processor.tokenizer
    assert model.config.image_patch_id == tok.convert_tokens_to_ids("<im_patch>")
    assert model.config.image_start_token_id == tok.convert_tokens_to_ids("<im_start>")
    assert model.config.low_res_image_start_token_id == tok.convert_tokens_to_ids("<low_res_im_start>")
    for token in [
        "<im_col>",
        "<|image|>",
        "<im_low>",
        "<frame_start>",
        "<frame_end>",
        "<|video|>",
        "<|im_start|>",
    ]:
        assert tok.convert_tokens_to_ids(token) != tok.unk_token_id
        assert tok.tokenize(token) == [token]


def test_processor_has_the_released_settings(tiny_model_path):
    processor = AutoProcessor.from_pretrained(tiny_model_path)
    image, video = processor.image_processor, processor.video_processor
    assert (image.size["height"], image.size["width"]) == (378, 378)
    assert (image.max_crops, list(image.overlap_margins), image.patch_size) == (8, [4, 4], 14)
    assert list(image.pooling_size) == [2, 2]
    assert list(video.pooling_size) == [3, 3]
    assert video.max_fps == 2


def test_image_prompt_has_the_real_number_of_visual_tokens(tiny_model):
    model, processor = tiny_model
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": _noise_image(640, 480)},
                {"type": "text", "text": "Describe."},
            ],
        }
    ]
    inputs = prepare_inputs(processor, messages)
    # By hand: a crop is 378 px = 27 patches of 14 px; 4-patch margins leave a 19-patch (266 px) window.
    # 640x480 minus the 8-patch (112 px) margins is 528x368 -> a 2x2 tiling -> 4 crops + 1 low-res view = 5.
    assert int(inputs["image_num_crops"][0]) == 5
    # Low-res view: 27x27 patches pooled 2x2 -> 14x14 = 196. High-res canvas: 2*266+112 = 644 px = 46
    # patches per side, pooled 2x2 -> 23x23 = 529. Together 725 patch tokens.
    assert visual_token_count(model, inputs) == 196 + 529
    # One <im_col> per row of the high-res view only (the released processor has no columns on low-res).
    col = processor.tokenizer.convert_tokens_to_ids("<im_col>")
    assert int((inputs["input_ids"] == col).sum()) == 23


def test_two_images_are_numbered_in_the_prompt(tiny_model):
    _, processor = tiny_model
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Hi"}]}
    ]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert "Image 1<|image|>Image 2<|image|>Hi" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_video_prompt_uses_real_frame_times(tiny_model, video_path):
    model, processor = tiny_model
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "video", "video": str(video_path)},
                {"type": "text", "text": "What happens?"},
            ],
        }
    ]
    inputs = prepare_inputs(processor, messages)
    # 2 fps over 3 s, first and last included: 0.0, 0.5, ..., 3.0 -> 7 frames of 27x27 patches pooled
    # 3x3 -> 9x9 = 81 tokens each.
    assert inputs["video_grids"].tolist() == [[7, 9, 9]]
    assert visual_token_count(model, inputs) == 7 * 81
    prompt = processor.decode(inputs["input_ids"][0])
    for t in ["0.0", "0.5", "1.0", "1.5", "2.0", "2.5", "3.0"]:
        assert f"{t} <im_start>" in prompt
    fewer = prepare_inputs(processor, messages, fps=1.0)
    assert fewer["video_grids"].tolist() == [[4, 9, 9]]
    per_video = [{"role": "user", "content": [{"type": "video", "video": str(video_path), "max_frames": 3}]}]
    assert prepare_inputs(processor, per_video)["video_grids"].tolist() == [[3, 9, 9]]


@pytest.mark.parametrize("kind", ["image", "two_images", "video"])
def test_chat_generates_text(tiny_model, video_path, tmp_path, kind):
    model, processor = tiny_model
    if kind == "video":
        media = [{"type": "video", "video": str(video_path)}]
    else:
        path = tmp_path / "a.png"
        _noise_image(300, 200).save(path)
        media = [{"type": "image", "image": str(path)}]
        if kind == "two_images":
            media.append({"type": "image", "image": _noise_image(200, 300, seed=1)})
    messages = [{"role": "user", "content": [*media, {"type": "text", "text": "Point to the cat."}]}]
    answer = chat(model, processor, messages, max_new_tokens=8)
    assert isinstance(answer, str)
    inputs = prepare_inputs(processor, messages)
    output = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert output.shape[1] > inputs["input_ids"].shape[1]  # generation ran
    expected = processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    assert answer == expected


def test_streaming_prints_the_answer(tiny_model, capsys):
    model, processor = tiny_model
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": _noise_image(100, 100)},
                {"type": "text", "text": "What is this?"},
            ],
        }
    ]
    quiet = chat(model, processor, messages, max_new_tokens=6)
    capsys.readouterr()
    streamed = chat(model, processor, messages, max_new_tokens=6, stream=True)
    printed = capsys.readouterr().out
    assert streamed == quiet
    assert printed.strip() == quiet


def test_building_twice_gives_the_same_bytes(tmp_path):
    a = build_tiny_molmo2(tmp_path / "a")
    b = build_tiny_molmo2(tmp_path / "b")
    files = sorted(p.name for p in a.iterdir())
    assert files == sorted(p.name for p in b.iterdir())
    assert "model.safetensors" in files and "processor_config.json" in files
    for name in files:
        assert (
            hashlib.sha256((a / name).read_bytes()).digest()
            == hashlib.sha256((b / name).read_bytes()).digest()
        ), name
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_missing_folder_gives_one_clear_error():
    with pytest.raises(ModelLoadError, match="neither a model folder"):
        load_model("./no/such/model-folder")


def test_folder_without_config_gives_one_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(tmp_path)


def test_hub_id_offline_gives_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", "/nonexistent-cache")
    with pytest.raises(ModelLoadError, match="not reachable.*MOLMO_MODEL_ID"):
        load_model("allenai/Molmo2-4B")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(loading, "_hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(ModelLoadError, match="no network"):
        load_model("allenai/Molmo2-4B")


def test_bad_options_are_rejected(tiny_model_path):
    with pytest.raises(ValueError, match="dtype must be"):
        load_model(tiny_model_path, dtype="int3")
    with pytest.raises(ValueError, match="quantization must be"):
        load_model(tiny_model_path, quantization="2bit")
    with pytest.raises(ModelLoadError, match="needs a CUDA GPU"):
        load_model(tiny_model_path, quantization="4bit")


def test_model_id_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("MOLMO_MODEL_ID", "some/model")
    assert loading.model_id() == "some/model"
    monkeypatch.delenv("MOLMO_MODEL_ID")
    assert loading.model_id() == "allenai/Molmo2-4B"


@pytest.mark.parametrize(("bf16", "expected"), [(True, "bfloat16"), (False, "float16")])
def test_dtype_follows_the_gpu(monkeypatch, bf16, expected):
    class Props:
        name, total_memory = "Tesla T4", 16 * 1024**3

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: Props())
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    hw = loading.detect_hardware()
    assert (hw.device, hw.dtype_name) == ("cuda", expected)


def test_cpu_gets_float32():
    assert loading.detect_hardware().dtype_name == "float32"
    assert "No GPU" in loading.hardware_report()


def test_out_of_memory_becomes_advice(tiny_model, monkeypatch):
    model, processor = tiny_model

    def boom(**kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(model, "generate", boom)
    messages = [
        {
            "role": "user",
            "content": [{"type": "image", "image": _noise_image(64, 64)}, {"type": "text", "text": "Hi"}],
        }
    ]
    with pytest.raises(OutOfMemoryAdvice, match="ran out of memory") as info:
        chat(model, processor, messages, fps=2.0, max_frames=64)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_missing_video_in_chat(tiny_model, tmp_path):
    model, processor = tiny_model
    messages = [{"role": "user", "content": [{"type": "video", "video": str(tmp_path / "nope.mp4")}]}]
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        chat(model, processor, messages)


def test_processor_and_config_load_without_weights(tiny_model_path):
    from molmo_nb_utils.loading import load_model_config, load_processor

    assert type(load_processor(tiny_model_path)).__name__ == "Molmo2Processor"
    assert load_model_config(tiny_model_path).model_type == "molmo2"
    with pytest.raises(ModelLoadError, match="neither a model folder"):
        load_processor("./missing/model")


def test_hub_check_asks_the_configured_endpoint(monkeypatch):
    seen = []

    def connect(address, timeout):
        seen.append(address)
        raise OSError("unreachable")

    monkeypatch.setattr(loading.socket, "create_connection", connect)
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.example:8443")
    assert loading._hub_reachable() is False
    assert seen == [("hf-mirror.example", 8443)]
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert loading._hub_reachable() is True  # behind a proxy, huggingface_hub decides
    assert len(seen) == 1


def test_unreadable_video_in_chat(tiny_model, tmp_path):
    model, processor = tiny_model
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video")
    messages = [{"role": "user", "content": [{"type": "video", "video": str(bad)}]}]
    with pytest.raises(ValueError, match="broken.mp4"):
        chat(model, processor, messages)


def test_auto_quantization_is_none_on_cpu(tiny_model_path):
    model, _ = load_model(tiny_model_path, quantization="auto")
    assert not getattr(model, "is_loaded_in_4bit", False) and model.dtype == torch.float32
