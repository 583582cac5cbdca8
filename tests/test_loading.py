"""The tiny Molmo2 loads and generates through the real transformers code paths."""

from __future__ import annotations

import hashlib

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from molmo_nb_utils import loading, tiny
from molmo_nb_utils.loading import ModelLoadError, load_model, load_model_config, load_processor
from molmo_nb_utils.tiny import build_tiny_molmo2
from molmo_nb_utils.vision_chunks import VISION_CHUNK, vision_chunk_size


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


TINY_SAID = "This is the tiny random test model that MOLMO_MODEL_ID=tiny asks for"


@pytest.mark.parametrize("gpu", [False, True])
def test_the_report_says_plainly_when_the_model_is_the_tiny_one(tiny_model_path, tmp_path, monkeypatch, gpu):
    """Asked for ``tiny`` (or the folder make and the tests build it in), 00 says so, not "(the tiny test model?)";
    another local folder is not called tiny."""
    if gpu:
        monkeypatch.setattr(
            loading, "detect_hardware", lambda: loading.Hardware("cuda", "bfloat16", "A100", 80.0, True)
        )
    monkeypatch.setattr(loading, "tiny_model_dir", lambda: tiny_model_path)
    for name in ("tiny", str(tiny_model_path)):
        monkeypatch.setenv("MOLMO_MODEL_ID", name)
        report = loading.hardware_report()
        assert TINY_SAID in report and "?" not in report and "Molmo2-4B on a CPU" not in report
    other = tmp_path / "my-molmo2"
    other.mkdir()
    (other / "config.json").write_text("{}")
    monkeypatch.setenv("MOLMO_MODEL_ID", str(other))
    report = loading.hardware_report()
    assert "tiny random test model" not in report and ("Molmo2-4B on a CPU" in report) != gpu


def test_processor_and_config_load_without_weights(tiny_model_path):
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


def test_auto_quantization_is_none_on_cpu(tiny_model_path):
    model, _ = load_model(tiny_model_path, quantization="auto")
    assert not getattr(model, "is_loaded_in_4bit", False) and model.dtype == torch.float32


def test_vision_encoding_is_chunked_by_default(tiny_model_path):
    model, _ = load_model(tiny_model_path)
    assert vision_chunk_size(model) == VISION_CHUNK == 8
    model, _ = load_model(tiny_model_path, vision_chunk=None)
    assert vision_chunk_size(model) is None
    with pytest.raises(ValueError, match="vision_chunk must be a whole number >= 1"):
        load_model("no/such-model-anywhere", vision_chunk=0)  # refused before any look-up


def test_the_name_tiny_builds_the_tiny_model_where_missing_and_loads_it(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "cache" / "tiny-molmo2"
    monkeypatch.setattr(loading, "tiny_model_dir", lambda: folder)
    monkeypatch.setenv("MOLMO_MODEL_ID", "tiny")
    model, processor = load_model()  # plain Python: no make, no folder yet
    assert model.config.model_type == "molmo2" and type(processor).__name__ == "Molmo2Processor"
    assert (folder / "config.json").is_file()
    assert "Building the tiny random Molmo2" in capsys.readouterr().out
    built = (folder / "model.safetensors").stat().st_mtime_ns
    assert loading.load_model_config("tiny").model_type == "molmo2"
    assert (folder / "model.safetensors").stat().st_mtime_ns == built  # reused, not rebuilt
    assert "Building" not in capsys.readouterr().out


def test_the_name_tiny_never_replaces_files_it_did_not_write(tmp_path, monkeypatch):
    folder = tmp_path / "tiny-molmo2"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    monkeypatch.setattr(loading, "tiny_model_dir", lambda: folder)
    with pytest.raises(ModelLoadError, match="could not be built there.*python -m molmo_nb_utils.tiny"):
        load_model("tiny")
    assert [p.name for p in folder.iterdir()] == ["notes.txt"] and (
        folder / "notes.txt"
    ).read_text() == "mine"


def test_tiny_lives_in_the_checkout_or_else_in_the_user_cache(tmp_path, monkeypatch):
    # downloaded_data/ of the checkout, unless $MOLMO_DATA_DIR moves it (as the tests do)
    assert tiny.tiny_model_dir() == tiny.folders.DATA_DIR / "tiny-molmo2"
    monkeypatch.setattr(tiny.folders, "REPO_ROOT", tmp_path / "site-packages")  # an installed package
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert tiny.tiny_model_dir() == tmp_path / "cache" / "molmo_nb_utils" / "tiny-molmo2"


def test_a_quantized_model_stays_on_its_own_gpu_in_a_data_parallel_launch(monkeypatch):
    """QLoRA under torchrun: each process loads a whole copy onto its LOCAL_RANK's GPU, not onto every GPU."""
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert loading.quantized_device_map() == "auto"
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert loading.quantized_device_map() == {"": 1}
