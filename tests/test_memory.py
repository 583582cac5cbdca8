"""The memory planner: parameter counts against real modules, hand-computed figures, measured peaks."""

from __future__ import annotations

import json
import warnings
import weakref
from functools import lru_cache

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from peft import get_peft_model
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import (
    BatchFeature,
    BertConfig,
    Molmo2Config,
    Molmo2ForConditionalGeneration,
    Molmo2ImageProcessor,
    Molmo2Processor,
    Molmo2VideoProcessor,
    PreTrainedTokenizerFast,
)
from transformers.video_utils import VideoMetadata

from molmo_nb_utils import memory
from molmo_nb_utils.media import planned_frames
from molmo_nb_utils.memory import (
    GIB,
    KNOWN_CONFIGS,
    choose_quantization,
    count_parameters,
    count_prompt_tokens,
    estimate_memory,
    gpu_budget_gb,
    image_tokens_estimate,
    next_setting_advice,
    suggest_settings,
    video_prompt_tokens,
    video_tokens_estimate,
)
from molmo_nb_utils.training import lora_config
from molmo_nb_utils.vision_chunks import chunk_vision

M4B, M8B, O7B = "allenai/Molmo2-4B", "allenai/Molmo2-8B", "allenai/Molmo2-O-7B"


def _tiny_config(vit_width=32, text_width=64, vit_layers=3, **text) -> Molmo2Config:
    heads = dict(num_attention_heads=vit_width // 16, num_key_value_heads=vit_width // 16, head_dim=16)
    vision = dict(
        hidden_size=vit_width, intermediate_size=4 * vit_width, num_hidden_layers=vit_layers, **heads
    )
    adapter = dict(vision_feature_layer=[-1, 0], hidden_size=vit_width, intermediate_size=40, **heads)
    text = {
        **dict(hidden_size=text_width, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
        **dict(head_dim=16, intermediate_size=96, vocab_size=300, additional_vocab_size=8),
        **text,
    }
    token_ids = dict(image_start_token_id=300, image_end_token_id=301, image_patch_id=302)
    token_ids |= dict(low_res_image_start_token_id=303, frame_start_token_id=304, frame_end_token_id=305)
    adapter["text_hidden_size"] = text_width
    return Molmo2Config(vision_config=vision, adapter_config=adapter, text_config=text, **token_ids)


def _module_counts(model) -> dict[str, int]:
    def n(module):
        return sum(p.numel() for p in module.parameters())

    lm = model.model.language_model
    return {
        "text_embeddings": n(lm.embed_tokens),
        "llm_layers": n(lm) - n(lm.embed_tokens),
        "lm_head": n(model.lm_head),
        "vision_tower": n(model.model.vision_tower),
        "adapter": n(model.model.multi_modal_projector),
        "total": n(model),
    }


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"qk_norm_type": "olmo", "norm_after": True}, {"attention_bias": True}, {"vit_layers": 5}],
)
def test_parameter_parts_are_the_real_modules(kwargs):
    config = _tiny_config(**kwargs)
    model = Molmo2ForConditionalGeneration(config)  # a real one, on the CPU, not the planner's meta model
    assert count_parameters(config) == _module_counts(model)
    assert count_parameters(config)["total"] == sum(p.numel() for p in model.state_dict().values())


def test_molmo2_4b_parts_by_hand():
    d, mlp = 1152, 4304  # the SigLIP ViT: 25 layers of q/k/v/o and fc1/fc2 with biases, two LayerNorms
    vit_layer = 4 * (d * d + d) + (d * mlp + mlp) + (mlp * d + d) + 2 * 2 * d
    # the adapter: attention pooling over the two ViT layers it reads (2 x 1152 in), then a SwiGLU to 2560
    adapter = 3 * (2 * d * d + d) + (d * d + d) + 2 * d * 9728 + 9728 * 2560
    # Qwen3-4B: q/k/v/o (32 and 8 heads of 128), q/k norms per head, SwiGLU 9728, two RMSNorms; final norm
    llm_layer = 2560 * (2 * 4096 + 2 * 1024) + 2 * 128 + 3 * 2560 * 9728 + 2 * 2560
    assert count_parameters(M4B) == {
        "text_embeddings": (151_936 + 128) * 2560,  # the text vocabulary and 128 additional tokens
        "llm_layers": 36 * llm_layer + 2560,
        "lm_head": 2560 * 151_936,
        "vision_tower": (729 + 588 + 1) * d + 25 * vit_layer,  # positions, patch embedding (+ bias)
        "adapter": adapter,
        "total": 4_850_869_200,
    }


def test_parameter_count_reads_a_hub_style_config_folder(tmp_path):
    # legacy keys of the released config.json: vit_config, image_num_pos, vit_layers counted from the end
    heads = {"num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 16}
    hub = {
        "vit_config": {
            "hidden_size": 32,
            "intermediate_size": 48,
            "num_hidden_layers": 6,
            "image_num_pos": 729,
            **heads,
        },
        "adapter_config": {"vit_layers": [-3, -5], "hidden_size": 32, "intermediate_size": 40, **heads},
        "text_config": {
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
        },
    }
    hub["adapter_config"]["text_hidden_size"] = 64
    hub["text_config"] |= {
        "head_dim": 16,
        "intermediate_size": 96,
        "vocab_size": 300,
        "additional_vocab_size": 8,
    }
    (tmp_path / "config.json").write_text(json.dumps(hub))
    with torch.device("meta"):
        model = Molmo2ForConditionalGeneration(Molmo2Config(**hub))
    # the ViT is trimmed to the deepest layer the adapter reads: 6 - 3 + 1 = 4 layers are built
    assert len(model.model.vision_tower.layers) == 4
    assert count_parameters(tmp_path) == count_parameters(tmp_path / "config.json") == _module_counts(model)


def test_molmo2_4b_count_matches_the_released_checkpoint():
    # "total_parameters" in allenai/Molmo2-4B model.safetensors.index.json (its fp32 19,403,476,800 bytes / 4)
    assert count_parameters(M4B)["total"] == 4_850_869_200 == 19_403_476_800 // 4


def test_kv_cache_by_hand():
    # K and V x layers x kv heads x head dim x tokens x 2 bytes (bf16)
    assert (
        estimate_memory(M4B, prompt_tokens=1000, new_tokens=0).kv_cache_gb * GIB
        == 2 * 36 * 8 * 128 * 1000 * 2
    )
    assert 2 * 36 * 8 * 128 * 1000 * 2 == 147_456_000
    # prompt + new tokens; Molmo2-8B has the same attention shape as 4B
    assert estimate_memory(M8B, prompt_tokens=744, new_tokens=256).kv_cache_gb * GIB == 147_456_000
    # Molmo2-O-7B: 32 layers, 32 kv heads (no grouped-query attention): 3.6x the 4B cache per token
    assert (
        estimate_memory(O7B, prompt_tokens=1000, new_tokens=0).kv_cache_gb * GIB
        == 2 * 32 * 32 * 128 * 1000 * 2
    )
    # fp32 doubles every value, a batch of 2 doubles the sequences; 4-bit weights keep a 16-bit cache
    assert (
        estimate_memory(M4B, precision="fp32", prompt_tokens=1000, new_tokens=0).kv_cache_gb * GIB
        == 294_912_000
    )
    assert (
        estimate_memory(M4B, prompt_tokens=1000, new_tokens=0, batch_size=2).kv_cache_gb * GIB == 294_912_000
    )
    assert (
        estimate_memory(M4B, precision="4bit", prompt_tokens=1000, new_tokens=0).kv_cache_gb * GIB
        == 147_456_000
    )


def test_weights_by_precision():
    bf16 = estimate_memory(M4B, prompt_tokens=0).weights_gb
    assert bf16 * GIB == 4_850_869_200 * 2  # 9.70 GB = 9.03 GiB
    assert 9 < bf16 < 10
    assert estimate_memory(M4B, precision="fp16", prompt_tokens=0).weights_gb == bf16
    assert estimate_memory(M4B, precision="fp32", prompt_tokens=0).weights_gb == 2 * bf16
    # Molmo2-8B: Qwen3-8B (~8.19e9 with the 128 extra embeddings) + ViT 0.38e9 + adapter 0.09e9 = ~8.66e9
    # parameters x 2 bytes = 17.3 GB = 16.1 GiB
    assert 8.6e9 * 2 < estimate_memory(M8B, prompt_tokens=0).weights_gb * GIB < 8.7e9 * 2
    # 4-bit: the decoder's linear layers, 36 x (2560 x (2 x 4096 + 2 x 1024) + 3 x 2560 x 9728)
    # = 3,633,315,840 weights at 0.5 + 1/64 + 4/16384 bytes; the other 1,217,553,360 parameters keep 2 bytes
    nf4 = 3_633_315_840 * (0.5 + 1 / 64 + 4 / 16384) + 1_217_553_360 * 2
    assert estimate_memory(M4B, precision="4bit", prompt_tokens=0).weights_gb * GIB == pytest.approx(nf4)
    assert 3 < nf4 / GIB < 7
    eight = 3_633_315_840 * 1 + 1_217_553_360 * 2
    assert estimate_memory(M4B, precision="8bit", prompt_tokens=0).weights_gb * GIB == pytest.approx(eight)


def test_peak_is_weights_plus_overhead_plus_the_largest_phase():
    text = estimate_memory(M4B, prompt_tokens=100, new_tokens=256)
    assert text.vision_gb == 0 and text.peak_phase == "decoding"
    video = estimate_memory(M4B, prompt_tokens=10_000, num_frames=120, vision_chunk=None)
    assert video.peak_phase == "the vision encoder"
    assert video.total_gb == pytest.approx(video.weights_gb + video.overhead_gb + video.vision_gb)
    assert video.activations_gb == max(video.vision_gb, video.prefill_gb)
    assert 0.5 <= video.overhead_gb <= 1
    # the ViT keeps all 26 hidden states of every frame: at least 26 x 120 x 729 x 1152 x 2 bytes
    assert video.vision_gb * GIB > 26 * 120 * 729 * 1152 * 2
    eager = estimate_memory(
        M4B, prompt_tokens=10_000, num_frames=120, attn_implementation="eager", vision_chunk=None
    )
    assert eager.vision_gb > video.vision_gb and eager.prefill_gb > video.prefill_gb
    table = str(video)
    for word in ("weights", "KV cache", "vision encoder", "prefill", "mask", "overhead", "peak total", "GiB"):
        assert word in table
    assert "120 frames, all at once" in table


def test_chunked_vision_sets_the_peak_by_the_chunk_not_the_video():
    def vision(frames, chunk):
        return estimate_memory(M4B, prompt_tokens=100 * frames, num_frames=frames, vision_chunk=chunk)

    # 8 frames at a time: the 26 hidden states of 8 frames, not of 120 (26 x 8 x 729 x 1152 x 2 bytes = 0.3 GiB)
    chunked, whole = vision(120, 8), vision(120, None)
    assert chunked.vision_gb * GIB > 26 * 8 * 729 * 1152 * 2 and chunked.vision_gb < whole.vision_gb / 5
    assert chunked.peak_phase == "prefill" and chunked.total_gb < whole.total_gb
    assert "8 at a time" in str(chunked)
    # what still grows with the video in the vision phase is small: pixels, prompt embeddings, pooled features
    growth = vision(240, 8).vision_gb - chunked.vision_gb
    assert 0 < growth < 0.5 and vision(240, None).vision_gb - whole.vision_gb > 5
    # a chunk as large as the video, or a video shorter than the chunk, is the same working set in the ViT
    assert vision(8, 8).vision_gb == vision(8, 100).vision_gb
    # an image's 8 high-resolution crops always go through together
    images = [estimate_memory(M4B, prompt_tokens=2000, num_crops=18, vision_chunk=c) for c in (1, 8, None)]
    assert images[0].vision_gb == images[1].vision_gb < images[2].vision_gb
    # without chunking, transformers keeps the ViT's last hidden state of every frame through the prefill
    assert whole.prefill_gb - chunked.prefill_gb == pytest.approx(120 * 729 * 1152 * 2 / GIB)
    for bad in (0, -8, 2.5, True):
        with pytest.raises(ValueError, match="vision_chunk must be a whole number >= 1"):
            estimate_memory(M4B, prompt_tokens=10, num_frames=4, vision_chunk=bad)


def test_kv_offload_keeps_a_few_layers_on_the_gpu():
    kv = dict(prompt_tokens=20_000, new_tokens=0, num_frames=200)
    on_gpu, offloaded = estimate_memory(M4B, **kv), estimate_memory(M4B, kv_offload=True, **kv)
    assert on_gpu.kv_cache_gb == offloaded.kv_cache_gb  # the same cache, elsewhere
    # 3 of Molmo2-4B's 36 layers of K and V stay on the GPU: the peak drops by 33/36 of the prompt's cache
    assert on_gpu.total_gb - offloaded.total_gb == pytest.approx(on_gpu.kv_cache_gb * 33 / 36)
    assert "offloaded to the CPU" in str(offloaded)


def test_attention_mask_grows_with_tokens_squared():
    # SDPA: the bool mask (1 byte) and, in every layer, its additive 16-bit copy and the kernel's padded copy
    est = estimate_memory(M4B, prompt_tokens=10_000, new_tokens=0)
    assert est.attention_mask_gb * GIB == 10_000**2 * (1 + 2 * 2)
    assert est.attention_mask_gb < est.prefill_gb


@lru_cache
def _config_4b() -> Molmo2Config:
    return memory.load_config(M4B)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 40_000), st.integers(0, 40_000), st.integers(0, 200), st.integers(0, 200))
def test_more_tokens_or_frames_never_need_less_memory(t1, t2, f1, f2):
    c = _config_4b()
    small = estimate_memory(c, prompt_tokens=min(t1, t2), num_frames=min(f1, f2))
    large = estimate_memory(c, prompt_tokens=max(t1, t2), num_frames=max(f1, f2))
    assert small.total_gb <= large.total_gb


class _LiveTensors(TorchDispatchMode):
    """Peak bytes of tensors alive at once (what torch.cuda.max_memory_allocated tracks on a GPU)."""

    def __init__(self, ignore: set[int]):
        super().__init__()
        self.ignore, self.live, self.peak, self.refs, self.sizes = ignore, 0, 0, {}, {}
        self.in_attention = 0  # most bytes alive inside a scaled_dot_product_attention kernel

    def _drop(self, key):
        self.refs[key] -= 1
        if not self.refs[key]:
            self.live -= self.sizes.pop(key)
            del self.refs[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and (key := t.untyped_storage().data_ptr()) not in self.ignore:
                if key not in self.refs:
                    self.refs[key], self.sizes[key] = 0, t.untyped_storage().nbytes()
                    self.live += self.sizes[key]
                    self.peak = max(self.peak, self.live)
                self.refs[key] += 1
                weakref.finalize(t, self._drop, key)
        if "scaled_dot_product" in func.__name__:
            self.in_attention = max(self.in_attention, self.live)
        return out


def _forward_peak(frames: int, text_tokens: int, mlp_width: int, chunk: int | None):
    """(measured GiB, estimate) of one forward pass of a small Molmo2 in fp32 on the CPU: the bytes of tensors
    alive at once, as torch.cuda.max_memory_allocated would count them, weights not included."""
    torch.manual_seed(0)
    config = _tiny_config(256, 256, vit_layers=6, intermediate_size=mlp_width, num_attention_heads=8)
    model = chunk_vision(Molmo2ForConditionalGeneration(config).eval(), chunk)
    grid = torch.arange(729).reshape(9, 3, 9, 3).permute(0, 2, 1, 3).reshape(81, 9)  # 3x3 pooling windows
    ids = [5] * (text_tokens // 2) + [304, *[302] * 81, 305] * frames + [6] * (text_tokens - text_tokens // 2)
    input_ids = torch.tensor([ids])
    inputs = dict(
        input_ids=input_ids,
        pixel_values_videos=torch.randn(frames, 729, 588),
        video_token_pooling=torch.cat([grid + 729 * f for f in range(frames)]),
        video_grids=torch.tensor([[frames, 9, 9]]),
        mm_token_type_ids=(input_ids == 302).long(),
    )
    ignore = {
        t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers(), *inputs.values()]
    }
    tracker = _LiveTensors(ignore)
    with torch.no_grad(), tracker:
        model(**inputs, use_cache=True, logits_to_keep=1)
    est = estimate_memory(
        config, precision="fp32", prompt_tokens=len(ids), new_tokens=0, num_frames=frames, vision_chunk=chunk
    )
    pixels = frames * 729 * 588 * 4  # inputs the tracker does not see
    # SDPA turns the bool mask into an additive one (tokens^2 x 4 bytes); CUDA's memory-efficient kernel then
    # pads that to a multiple of 16 columns, a second copy that CPU kernels do not make
    on_cuda = max(tracker.peak, tracker.in_attention + len(ids) ** 2 * 4)
    return (on_cuda + pixels) / GIB, est


@pytest.mark.parametrize(
    "frames, text_tokens, mlp_width, chunk",
    [
        (4, 40, 1024, None),
        (1, 1600, 1024, None),
        (1, 1600, 4096, None),
        (12, 40, 1024, None),
        (12, 40, 1024, 3),
    ],
)
def test_estimate_follows_the_measured_peak_of_a_forward_pass(frames, text_tokens, mlp_width, chunk):
    """Peaks set by the vision encoder (4 or 12 frames, all at once or 3 at a time), by prefill attention
    (1,600 text tokens) or by the prefill MLP (the same with a 4x wider MLP)."""
    measured, est = _forward_peak(frames, text_tokens, mlp_width, chunk)
    assert est.peak_phase == ("the vision encoder" if frames > 1 else "prefill")
    assert 0.97 * measured <= est.total_gb - est.weights_gb - est.overhead_gb <= 1.25 * measured


def test_chunked_vision_lowers_the_measured_peak_as_the_planner_says():
    whole, whole_est = _forward_peak(12, 40, 1024, None)
    chunked, chunked_est = _forward_peak(12, 40, 1024, 3)
    assert chunked < whole / 2  # 3 frames' hidden states at a time instead of 12
    saved, planned = whole - chunked, whole_est.total_gb - chunked_est.total_gb
    assert saved == pytest.approx(planned, rel=0.1)


def _fake_processor():
    """A real Molmo2Processor with a word-level tokenizer built in memory (no download)."""

    special = ["<im_patch>", "<im_col>", "<im_start>", "<low_res_im_start>", "<frame_start>", "<im_end>",
               "<frame_end>", "<im_low>", "<|image|>", "<|video|>"]  # fmt: skip
    words = ["[UNK]", "<|endoftext|>", "describe", "this", "what", "happens"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="[UNK]",
        additional_special_tokens=special,
    )  # fmt: skip
    template = (
        "{% for m in messages %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<|image|>"
        "{% else %} {{ c['text'] }}{% endif %}{% endfor %}{% endfor %}"
    )
    # use_single_crop_col_tokens=False as in the released processor_config.json
    return Molmo2Processor(Molmo2ImageProcessor(), Molmo2VideoProcessor(), tokenizer, chat_template=template,
                           use_single_crop_col_tokens=False)  # fmt: skip


def test_count_prompt_tokens_from_the_real_processor():
    processor = _fake_processor()
    image = Image.fromarray(np.zeros((48, 64, 3), np.uint8))
    inputs = processor(text="<|image|> describe this", images=[image], return_tensors="pt")
    # bos + the image + 2 words; a 64x48 image is one tile, so the image is 410 tokens (see below)
    assert count_prompt_tokens(processor, inputs) == 1 + 410 + 2 == inputs["input_ids"].shape[-1]
    assert image_tokens_estimate(48, 64) == 410
    messages = [
        {
            "role": "user",
            "content": [{"type": "image", "image": image}, {"type": "text", "text": "describe this"}],
        }
    ]
    assert count_prompt_tokens(processor, messages) == 413
    # a video: per frame its timestamp (one word here), <frame_start>, 81 patches, <frame_end>
    video = np.zeros((4, 48, 64, 3), np.uint8)
    meta = VideoMetadata(total_num_frames=4, fps=2.0, frames_indices=[0, 1, 2, 3])
    inputs = processor(
        text="<|video|> what happens", videos=[video], video_metadata=[meta], do_sample_frames=False
    )
    assert count_prompt_tokens(None, inputs) == 1 + 4 * (1 + 83) + 2
    # Qwen's tokenizer spells each timestamp digit by digit: the estimate is 4 tokens more per frame (" 0.5 ")
    assert video_tokens_estimate(4, fps=2.0) == 4 * 83 + (3 + 1) + 3 * (3 + 2)


def test_count_prompt_tokens_accepts_plain_outputs_and_rejects_the_rest():
    assert count_prompt_tokens(None, BatchFeature({"input_ids": torch.zeros(1, 37)})) == 37
    assert count_prompt_tokens(None, {"input_ids": [[1, 2, 3]]}) == 3
    assert count_prompt_tokens(None, {"input_ids": [1, 2, 3, 4]}) == 4
    with pytest.raises(ValueError, match="no 'input_ids'"):
        count_prompt_tokens(None, {"pixel_values": 1})
    with pytest.raises(ValueError, match="a processor is needed"):
        count_prompt_tokens(None, [{"role": "user", "content": "hi"}])
    with pytest.raises(ValueError, match="expected chat messages"):
        count_prompt_tokens(None, "hello")


def test_token_estimates_by_hand():
    # 640x480 with 8 crops: 2x2 tiles of 266 px + 112 px margins = 644 px = 46 patches = 23 pooled per side;
    # 23 rows x (23 + 1 column token) + start/end = 554, plus the 198-token global crop (1 + 14 x 14 + 1)
    assert image_tokens_estimate(480, 640) == 23 * 24 + 2 + 198 == 752
    # one crop: 27 patches -> 14 pooled; 14 x 15 + 2 + 198
    assert image_tokens_estimate(480, 640, max_crops=1) == image_tokens_estimate(max_crops=1) == 410
    # worst case for 8 crops: an 8x1 tiling, 8 x 19 + 8 = 160 patches -> 80 rows of 14 + 1
    assert image_tokens_estimate() == 80 * 15 + 2 + 198
    # frames at 0.0, 0.5, 1.0 s: 81 patches + start/end + "0.0 " then " 0.5 ", " 1.0 "
    assert video_tokens_estimate(3) == (83 + 4) + (83 + 5) * 2 == 263
    assert video_tokens_estimate(0) == 0
    with pytest.raises(ValueError, match="num_frames must be >= 0"):
        video_tokens_estimate(-1)
    with pytest.raises(ValueError, match="fps > 0"):
        video_tokens_estimate(3, fps=0)
    with pytest.raises(ValueError, match="max_crops must be a whole number >= 1"):
        image_tokens_estimate(10, 10, max_crops=0)
    with pytest.raises(ValueError, match="height must be a whole number >= 1"):
        image_tokens_estimate(0, 10)


def test_suggestions_grow_with_the_budget():
    frames, crops = [], []
    for budget in (8, 10, 12, 14.7, 16, 20, 24, 40, 80):
        video = suggest_settings(M4B, budget, precision="fp16", duration_s=120)
        frames.append(video.estimate.num_frames if video.fits else 0)
        images = suggest_settings(M4B, budget, image_count=3)
        crops.append(images.max_crops if images.fits else 0)
        for s in (video, images):
            assert s.fits == (s.estimate.total_gb <= budget)
    # 120 s at 2 fps with the first and the last frame: 241 frames when the budget allows all of them.
    assert frames == sorted(frames) and frames[0] < frames[-1] == 241
    assert crops == sorted(crops) and crops[-1] == 8


def test_suggestion_is_the_largest_that_fits():
    t4 = 14.74  # a Colab T4 as torch.cuda reports it
    for chunk in (None, 8):
        s = suggest_settings(M4B, t4, precision="fp16", duration_s=120, vision_chunk=chunk)
        assert s.fits and s.estimate.total_gb <= t4 and s.advice.startswith("Fits: ")
        assert f"max_frames={s.max_frames}" in s.advice and s.estimate.vision_chunk == chunk
        # the next larger frame cap does not fit
        larger = min(f for f in (384, 128, 64, 32, 16, 8) if f > s.max_frames)
        frames = min(larger, 241)  # 120 s at 2 fps: 241 frames, first and last included
        tokens = video_tokens_estimate(frames, fps=frames / 120) + memory.PROMPT_TEXT_TOKENS
        kwargs = dict(prompt_tokens=tokens, num_frames=frames, vision_chunk=chunk)
        assert estimate_memory(M4B, precision="fp16", **kwargs).total_gb > t4
    # chunked vision encoding lets the T4 see twice the frames (128 instead of 64)
    assert suggest_settings(M4B, t4, precision="fp16", duration_s=120).max_frames == 128
    assert suggest_settings(M4B, t4, precision="fp16", duration_s=120, vision_chunk=None).max_frames == 64
    # and with the KV cache offloaded, all 241 frames of 2 minutes at 2 fps
    offloaded = suggest_settings(M4B, t4, precision="fp16", duration_s=120, kv_offload=True)
    assert offloaded.fits and offloaded.estimate.num_frames == 241 and offloaded.estimate.kv_offload
    text = suggest_settings(M4B, t4)
    assert text.fits and (text.fps, text.max_frames, text.max_crops) == (None, None, None)
    sized = suggest_settings(M4B, 10.5, image_count=1, image_size=(480, 640))
    worst = suggest_settings(M4B, 10.5, image_count=1)
    assert sized.max_crops >= worst.max_crops


def test_when_nothing_fits_the_advice_names_a_precision_that_does():
    s = suggest_settings(M8B, 10, precision="bf16", duration_s=30)
    assert not s.fits and s.estimate.total_gb > 10
    assert (
        "Does not fit" in s.advice and "Load the model in 4bit" in s.advice
    )  # 8-bit weights alone are 9.7 GiB
    assert (s.fps, s.max_frames) == (0.5, 8)  # the smallest setting tried
    assert suggest_settings(M8B, 10, precision="4bit", duration_s=30).fits
    hopeless = suggest_settings(O7B, 3, precision="bf16", duration_s=30)
    assert not hopeless.fits and "No precision fits" in hopeless.advice


def test_next_setting_advice_steps_down_one_knob_at_a_time():
    assert "max_frames=64" in next_setting_advice(2, 128, None, "bf16")
    assert "fps=1" in next_setting_advice(2, 8, None, "bf16")
    assert "fps=0.5" in next_setting_advice(1, 8, None, "fp16")
    assert "max_crops=6" in next_setting_advice(None, None, 8, "bf16")
    assert "4-bit" in next_setting_advice(0.5, 8, None, "bf16")
    assert "4-bit" in next_setting_advice(None, None, 1, "8bit")
    assert "smallest settings" in next_setting_advice(0.5, 8, 1, "4bit")
    for advice in (next_setting_advice(2, 384, None, "bf16"), next_setting_advice(None, None, 1, "4bit")):
        assert advice.startswith("Out of GPU memory")


def test_gpu_budget(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_budget_gb() is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (3 * GIB, 16 * GIB))
    assert gpu_budget_gb() == 16.0 and gpu_budget_gb(free=True) == 3.0


def test_bad_inputs_get_clear_errors():
    with pytest.raises(ValueError, match="unknown precision 'int4': use one of fp32, bf16, fp16, 8bit, 4bit"):
        estimate_memory(M4B, precision="int4", prompt_tokens=10)
    with pytest.raises(ValueError, match="prompt_tokens must be >= 0, got -1"):
        estimate_memory(M4B, prompt_tokens=-1)
    with pytest.raises(ValueError, match="new_tokens must be >= 0"):
        estimate_memory(M4B, prompt_tokens=10, new_tokens=-5)
    with pytest.raises(ValueError, match="batch_size must be a whole number >= 1"):
        estimate_memory(M4B, prompt_tokens=10, batch_size=0)
    with pytest.raises(ValueError, match="not both"):
        estimate_memory(M4B, prompt_tokens=10, num_crops=9, num_frames=8)
    with pytest.raises(ValueError, match="attn_implementation must be 'sdpa' or 'eager'"):
        estimate_memory(M4B, prompt_tokens=10, attn_implementation="flash_attention_2")
    with pytest.raises(ValueError, match="cannot read a Molmo2 config from 'allenai/Molmo3'"):
        count_parameters("allenai/Molmo3")
    with pytest.raises(ValueError, match="expected a Molmo2 config, got BertConfig"):
        count_parameters(BertConfig())
    for budget in (0, -2.0):
        with pytest.raises(ValueError, match="budget_gb must be > 0"):
            suggest_settings(M4B, budget)
    with pytest.raises(ValueError, match="unknown precision"):
        suggest_settings(M4B, 16, precision="int8")
    with pytest.raises(ValueError, match="not both"):
        suggest_settings(M4B, 16, duration_s=10, image_count=2)
    with pytest.raises(ValueError, match="duration_s > 0"):
        suggest_settings(M4B, 16, duration_s=0)
    with pytest.raises(ValueError, match="candidate lists must not be empty"):
        suggest_settings(M4B, 16, duration_s=10, candidates_fps=())
    with pytest.raises(ValueError, match="unknown precision"):
        next_setting_advice(2, 64, None, "half")


def test_known_configs_are_the_three_released_models():
    assert set(KNOWN_CONFIGS) == {M4B, M8B, O7B}
    c = memory.load_config(O7B)
    assert (c.text_config.qk_norm_type, c.text_config.norm_after, c.text_config.num_key_value_heads) == (
        "olmo",
        True,
        32,
    )
    assert (
        c.vision_config.num_hidden_layers == 25
    )  # 27 declared, trimmed to the deepest layer read (-3 -> 24)


def test_video_prompt_tokens_come_from_the_real_processor(tiny_model):
    _, processor = tiny_model
    ten = video_prompt_tokens(processor, 10.0)
    # 10 s at 2 fps, first and last frame: 21 frames of 81 visual tokens, a start and an end token
    # and a timestamp ("9.5 ", a few text tokens) per frame, plus the chat turn around the question.
    assert 21 * 83 < ten <= 21 * (83 + 4) + 40
    one_fps = video_prompt_tokens(processor, 10.0, fps=1.0)
    assert 11 * 83 < one_fps <= 11 * (83 + 4) + 40
    assert 16 * 83 < video_prompt_tokens(processor, 600.0, max_frames=16) <= 16 * (83 + 5) + 40  # capped
    with pytest.raises(ValueError, match="seconds > 0"):
        video_prompt_tokens(processor, 0)


def test_choose_quantization_follows_the_budget():
    # From the estimates for one 9-crop image with Molmo2-4B: about 10 GiB in bf16, 6.6 in 8-bit, 5 in 4-bit.
    assert choose_quantization("allenai/Molmo2-4B", 24.0) is None
    assert choose_quantization("allenai/Molmo2-4B", 15.0, half="fp16") is None
    assert choose_quantization("allenai/Molmo2-4B", 8.0) == "8bit"
    assert choose_quantization("allenai/Molmo2-4B", 6.0) == "4bit"
    assert choose_quantization("allenai/Molmo2-8B", 15.0) == "8bit"
    assert choose_quantization("allenai/Molmo2-4B", 2.0) == "4bit"  # nothing fits: the best chance
    with pytest.raises(ValueError, match="budget_gb"):
        choose_quantization("allenai/Molmo2-4B", 0)


def test_planned_frames_follow_the_sampling_rule():
    # 2 fps over 4 s: 0.0, 0.5, ..., 3.5 and the last frame at 4.0 -> 9 (as molmo_utils samples a file).
    assert planned_frames(4.0) == 9
    assert planned_frames(4.0, fps=8) == 33
    assert planned_frames(600.0, max_frames=384) == 384  # the budget: frames spread over the video
    with pytest.raises(ValueError, match="seconds > 0"):
        planned_frames(0)


# ---------------------------------------------------------------------------------------------
# Training (09): LoRA and QLoRA


def test_lora_parameters_by_hand(tiny_model_path):
    # the tiny model: 2 layers of q 32->32, k and v 32->16, o 32->32, gate and up 32->64, down 64->32, and the
    # head 32->501: rank 16 x (in + out) each
    per_layer = 16 * ((32 + 32) + 2 * (32 + 16) + (32 + 32) + 2 * (32 + 64) + (64 + 32))
    assert memory.lora_parameter_count(tiny_model_path) == 2 * per_layer + 16 * (32 + 501) == 24_912
    model = Molmo2ForConditionalGeneration.from_pretrained(tiny_model_path)
    with warnings.catch_warnings():  # peft 0.21 reads transformers' deprecated is_gradient_checkpointing
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        peft_model = get_peft_model(model, lora_config(rank=16))
    assert sum(p.numel() for p in peft_model.parameters() if p.requires_grad) == 24_912
    assert memory.lora_parameter_count(tiny_model_path, rank=4, train_connector=True) > 24_912 // 4


def test_training_estimate_adds_up_and_follows_the_settings():
    kwargs = dict(prompt_tokens=1500, num_crops=9)
    qlora = memory.estimate_training_memory("allenai/Molmo2-4B", precision="4bit", **kwargs)
    lora = memory.estimate_training_memory("allenai/Molmo2-4B", precision="bf16", **kwargs)
    assert qlora.weights_gb < lora.weights_gb / 2
    assert qlora.lora_gb == pytest.approx(qlora.lora_parameters * 16 / memory.GIB)
    peak = qlora.weights_gb + qlora.lora_gb + max(qlora.activations_gb, qlora.vision_gb) + qlora.overhead_gb
    assert qlora.total_gb == pytest.approx(peak)
    # the weights are the inference planner's
    assert qlora.weights_gb == pytest.approx(estimate_memory("allenai/Molmo2-4B", precision="4bit",
                                                             prompt_tokens=1500).weights_gb)  # fmt: skip
    no_checkpointing = memory.estimate_training_memory(
        "allenai/Molmo2-4B", precision="4bit", gradient_checkpointing=False, **kwargs
    )
    assert no_checkpointing.activations_gb > 3 * qlora.activations_gb
    longer = memory.estimate_training_memory(
        "allenai/Molmo2-4B", precision="4bit", prompt_tokens=3000, num_crops=9
    )
    assert longer.total_gb > qlora.total_gb
    assert "estimate" in qlora.table() and "LoRA state" in str(qlora)
    video = memory.estimate_training_memory("allenai/Molmo2-4B", prompt_tokens=3000, num_frames=33)
    assert video.vision_gb == pytest.approx(
        estimate_memory("allenai/Molmo2-4B", precision="4bit", prompt_tokens=3000, new_tokens=0,
                        num_frames=33).vision_gb
    )  # fmt: skip
    assert "33 frames" in video.table()
    with pytest.raises(ValueError, match="unknown precision"):
        memory.estimate_training_memory("allenai/Molmo2-4B", precision="3bit", prompt_tokens=10)
