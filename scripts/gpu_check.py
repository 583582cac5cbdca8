"""Measure Molmo2's peak memory and speed on this machine, next to the planner's estimate (`make gpu-check`).

Nothing is downloaded. The models are random weights in the shapes of the released checkpoints
(``memory.KNOWN_CONFIGS``), built on the meta device and materialised through the same
``Molmo2ForConditionalGeneration`` class. The processor is the offline one of ``molmo_nb_utils.tiny``: the real
image and video geometry, but a small tokenizer that spells frame times a little differently from Qwen's, so a
prompt is a few tokens per frame off the real one; every estimate is made for the prompt that actually ran. The
media are generated at real sizes (1280x720 photos, 640x360 videos at 16 fps), and every setting goes through
``chat`` with a fixed number of new tokens (``min_new_tokens``: random weights may end an answer at once).

On a CUDA GPU: Molmo2-4B and, where it fits, Molmo2-8B in bf16 (where the GPU has it), fp16 and 4-bit NF4 (the
vision tower and projector in 16-bit, through ``load_model``), in each lesson's setting; the peak of
``torch.cuda.max_memory_allocated``, the time to the first token (vision encoder and prefill) and per new token,
against the planner without its CUDA-context allowance. Also the 60 s video without chunked vision encoding, and
2 minutes at 2 fps in fp16 with the KV cache offloaded to the CPU. And 20 steps of fine_tune (09) on one image, in
QLoRA and in 16-bit LoRA, against estimate_training_memory (the "training" rows).

Without a GPU: Molmo2-4B in bf16 on the CPU, one image and 8 frames of a video: the peak RSS (VmHWM, reset before
each setting) above the RSS before the weights were made, against the planner's weights + peak phase (no CUDA
overhead). Then the vision tower and adapter alone on 24 frames, with and without chunked encoding.

Results go to notebooks/gpu_check.json (this device kind's section; the other kind's is kept) with the planner's
estimate for every lesson setting (the README's memory column reads them), and a table is printed.

    .venv/bin/python scripts/gpu_check.py                  # measure on the GPU, or on the CPU without one
    .venv/bin/python scripts/gpu_check.py --estimates-only # only refresh the planner's figures in the JSON
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import gc
import json
import platform
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from molmo_nb_utils.memory import GIB, estimate_memory, load_config, planned_frames, video_prompt_tokens
from molmo_nb_utils.paths import atomic_path
from molmo_nb_utils.vision_chunks import VISION_CHUNK, chunk_vision

REPO_ROOT = Path(__file__).resolve().parent.parent
OUT = REPO_ROOT / "notebooks" / "gpu_check.json"
MODELS = ("allenai/Molmo2-4B", "allenai/Molmo2-8B")
GPU_NEW_TOKENS, CPU_NEW_TOKENS, README_NEW_TOKENS = 64, 8, 256  # README: the planner's default answer
IMAGE_SIZE = (1280, 720)  # width, height: 9 crops at the default max_crops=8
VIDEO_SIZE, VIDEO_FPS = (640, 360), 16  # the size and rate of the sample videos in input/
CHUNK_FRAMES = 24  # frames for the vision-only comparison of chunked and all-at-once encoding
QUESTION = {"image": "Describe the image.", "video": "What happens in the video?"}
TOKEN_IDS = ("image_start_token_id", "low_res_image_start_token_id", "image_end_token_id", "image_patch_id",
             "frame_start_token_id", "frame_end_token_id")  # fmt: skip


@dataclass(frozen=True)
class Setting:
    """One way a lesson asks: images, or a video of ``seconds`` sampled at ``fps`` up to ``max_frames``."""

    name: str
    images: int = 0
    seconds: float = 0.0
    fps: float = 2.0
    max_frames: int = 384
    vision_chunk: int | None = VISION_CHUNK
    kv_offload: bool = False
    image_size: tuple[int, int] = IMAGE_SIZE


LESSONS = (
    Setting("one image", images=1),
    Setting("two images", images=2),
    Setting("4 s video at 2 fps", seconds=4),
    Setting("10 s video at 2 fps", seconds=10),
    Setting("60 s video at 2 fps", seconds=60),
    Setting("4 s video at 8 fps", seconds=4, fps=8),
)
GPU_EXTRAS = (
    Setting("60 s video at 2 fps, all frames at once", seconds=60, vision_chunk=None),
    Setting("120 s video at 2 fps, KV cache offloaded", seconds=120, kv_offload=True),
)
# on 2 CPU cores the 9 crops of a 1280x720 photo take a minute to the first token: a smaller photo (5 crops)
CPU_SETTINGS = (
    Setting("one 640x480 image", images=1, image_size=(640, 480)),
    Setting("8 frames of a 4 s video", seconds=4, max_frames=8),
)


# ---------------------------------------------------------------------------------------------------------
# Models, processor and media, all made here


def offline_processor(folder: Path):
    """(processor, its media token ids): the tiny model's processor, with the released image/video geometry."""
    from transformers import AutoConfig, AutoProcessor

    from molmo_nb_utils.tiny import build_tiny_molmo2

    path = build_tiny_molmo2(folder / "tiny-molmo2")
    tiny = AutoConfig.from_pretrained(path)
    ids = {key: getattr(tiny, key) for key in (*TOKEN_IDS, "bos_token_id", "eos_token_id", "pad_token_id")}
    return AutoProcessor.from_pretrained(path), ids


def real_shape_config(name: str, token_ids: dict[str, int]):
    """The released model's shapes, with the offline processor's media token ids (all inside its vocabulary)."""
    config = load_config(name)
    for key, value in token_ids.items():
        setattr(config, key, value)
    return config


def random_model(config: Any, dtype: Any, device: str, *, text_only: bool = False):
    """A Molmo2 with random weights in ``dtype`` on ``device``: built on the meta device (no memory), given
    storage, and filled from one block of normal(0, 0.02) values repeated (a few seconds for 4B, where drawing
    4.9e9 numbers takes a minute on a CPU); norms and RoPE tables are set as in a fresh model. ``text_only``
    leaves out the vision tower and connector, for text prompts (scripts/benchmark_batch.py)."""
    import torch
    from transformers import GenerationConfig, Molmo2ForConditionalGeneration

    with torch.device("meta"):
        model = Molmo2ForConditionalGeneration._from_config(config, dtype=dtype)
        if text_only:
            model.model.vision_tower = torch.nn.Identity()
            model.model.multi_modal_projector = torch.nn.Identity()
    model.to_empty(device=device)
    with torch.no_grad():
        block = torch.randn(1 << 22, device=device).mul_(0.02)
        for param in model.parameters():
            flat = param.view(-1)
            for start in range(0, flat.numel(), block.numel()):
                part = flat[start : start + block.numel()]
                part.copy_(block[: part.numel()])
        for module in model.modules():  # unit norms and the RoPE frequencies, as in a fresh model
            if "Norm" in type(module).__name__ or "RotaryEmbedding" in type(module).__name__:
                model._init_weights(module)
    ids = {key: getattr(config, key) for key in ("bos_token_id", "eos_token_id", "pad_token_id")}
    model.generation_config = GenerationConfig(**ids)
    return model.eval()


def make_image(seed: int, size: tuple[int, int] = IMAGE_SIZE) -> Image.Image:
    """A picture of ``size`` (width, height): a gradient and a few shapes (content does not change memory)."""
    rng = np.random.default_rng(seed)
    width, height = size
    ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    pixels = np.broadcast_to(ramp * rng.uniform(0.3, 1, 3), (height, width, 3)).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y = rng.integers(0, width - 100), rng.integers(0, height - 100)
        draw.ellipse((x, y, x + 100, y + 100), fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    return image


def make_video(folder: Path, seconds: float) -> Path:
    """A ``seconds``-long 640x360 H.264 video at 16 fps: a square moving over a gradient."""
    from molmo_nb_utils.drawing import write_video

    path = folder / f"video_{seconds:g}s.mp4"
    if path.is_file():
        return path
    width, height = VIDEO_SIZE
    base = np.broadcast_to(np.linspace(0, 255, width, dtype=np.uint8)[None, :, None], (height, width, 3))

    def frames():
        for n in range(round(seconds * VIDEO_FPS)):
            frame = base.copy()
            x = n * 7 % (width - 60)
            frame[150:210, x : x + 60] = (255, 64, 32)
            yield frame

    return write_video(frames(), path, VIDEO_FPS)


def messages_for(setting: Setting, folder: Path) -> list[dict]:
    from molmo_nb_utils import user_message

    if setting.images:
        images = [make_image(k, setting.image_size) for k in range(setting.images)]
        return [user_message(*images, text=QUESTION["image"])]
    return [user_message(make_video(folder, setting.seconds), text=QUESTION["video"])]


# ---------------------------------------------------------------------------------------------------------
# Measuring


class TokenTimes:
    """A generate() streamer that notes when the prompt goes in and when each new token comes out; it calls
    ``on_start`` first, when generate starts (the processor's work is done by then)."""

    def __init__(self, on_start: Any = None) -> None:
        self.times: list[float] = []
        self.on_start = on_start

    def put(self, value: Any) -> None:
        if not self.times and self.on_start is not None:
            self.on_start()
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass

    @property
    def first_token_s(self) -> float | None:
        """Vision encoder + prefill + the first token."""
        return self.times[1] - self.times[0] if len(self.times) > 1 else None

    @property
    def per_token_s(self) -> float | None:
        return (self.times[-1] - self.times[1]) / (len(self.times) - 2) if len(self.times) > 2 else None


def rss_gib(key: str = "VmRSS") -> float:
    """This process's resident memory (VmRSS) or its peak since the last reset_peak_rss (VmHWM), in GiB."""
    status = Path("/proc/self/status").read_text()
    found = re.search(rf"^{key}:\s+(\d+) kB", status, re.M)
    if found is None:
        raise RuntimeError(f"/proc/self/status has no {key}: the CPU check needs Linux")
    return int(found.group(1)) * 1024 / GIB


def free_large_blocks_at_once() -> None:
    """Make glibc give blocks of 1 MiB or more back to the system as soon as they are freed, so that the RSS
    follows the tensors alive. By default it raises that threshold up to 32 MiB as the program runs and keeps
    freed blocks below it in its heaps, where they count as resident: peaks read 0.2-0.4 GiB high, and vary."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return  # not glibc: peaks may read a little high
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 1 << 20)
    libc.mallopt(m_trim_threshold, 1 << 20)


def reset_peak_rss() -> None:
    """Give freed heap memory back to the system, then restart VmHWM at the current RSS (Linux)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: freed memory may stay in the process and read as part of the next peak
    Path("/proc/self/clear_refs").write_text("5")


def inputs_of(processor, messages: list[dict], setting: Setting) -> tuple[int, int, int]:
    """(prompt tokens, image crops, video frames) of what chat will send, from the real processor."""
    from molmo_nb_utils import prepare_inputs

    inputs = prepare_inputs(processor, messages, fps=setting.fps, max_frames=setting.max_frames)
    crops = int(inputs["image_num_crops"].sum()) if "image_num_crops" in inputs else 0
    frames = int(inputs["pixel_values_videos"].shape[0]) if "pixel_values_videos" in inputs else 0
    return int(inputs["input_ids"].shape[-1]), crops, frames


def estimate_row(config: Any, row: dict) -> dict:
    """The planner's figures for a row's model, precision and inputs: whole (with the CUDA allowance) and
    without it, as allocated memory or RSS is measured."""
    est = estimate_memory(
        config, precision=row["precision"], prompt_tokens=row["prompt_tokens"], new_tokens=row["new_tokens"],
        num_crops=row["crops"], num_frames=row["frames"], vision_chunk=row["vision_chunk"],
        kv_offload=row["kv_offload"],
    )  # fmt: skip
    figures = {
        "estimated_gib": round(est.total_gb - est.overhead_gb, 3),
        "estimated_total_gib": round(est.total_gb, 3),
    }
    figures["peak_phase"] = est.peak_phase
    if row.get("measured_gib"):
        figures["error_pct"] = round(
            100 * (figures["estimated_gib"] - row["measured_gib"]) / row["measured_gib"], 1
        )
    return figures


def measure(
    model,
    processor,
    config,
    setting: Setting,
    precision: str,
    new_tokens: int,
    folder: Path,
    baseline_gib: float = 0.0,
) -> dict:
    """Ask once in ``setting`` and return the row: inputs, measured peak and times, the planner's estimate.
    On the CPU the peak is VmHWM above ``baseline_gib``, the RSS before the model existed."""  # fmt: skip
    import torch

    from molmo_nb_utils import chat

    messages = messages_for(setting, folder)
    prompt_tokens, crops, frames = inputs_of(processor, messages, setting)
    row = dict(model=config.name_or_path or "", setting=setting.name, precision=precision,
               vision_chunk=setting.vision_chunk, kv_offload=setting.kv_offload, prompt_tokens=prompt_tokens,
               crops=crops, frames=frames, new_tokens=new_tokens)  # fmt: skip
    chunk_vision(model, setting.vision_chunk)
    extra = {"cache_implementation": "offloaded"} if setting.kv_offload else {}
    cuda = model.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    # on the CPU, the peak of generate() only: the processor's host-side work is not the model's memory
    timer = TokenTimes(on_start=None if cuda else reset_peak_rss)
    answer = chat(model, processor, messages, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                  fps=setting.fps, max_frames=setting.max_frames, streamer=timer, **extra)  # fmt: skip
    if cuda:
        row["measured_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 3)
        row["reserved_gib"] = round(torch.cuda.max_memory_reserved() / GIB, 3)
    else:
        row["measured_gib"] = round(rss_gib("VmHWM") - baseline_gib, 3)
    if answer.prompt_tokens != prompt_tokens:
        raise RuntimeError(
            f"{setting.name}: chat sent {answer.prompt_tokens} tokens, expected {prompt_tokens}"
        )
    row["first_token_s"] = round(timer.first_token_s, 3)
    row["per_token_s"] = round(timer.per_token_s, 4)
    return row | estimate_row(config, row)


def vision_chunking_on_cpu(config, processor, frames: int = CHUNK_FRAMES) -> list[dict]:
    """The real-shape vision tower and adapter alone (the language model stays on the meta device) on
    ``frames`` frames, chunked and all at once: peak RSS above what was resident before the call."""
    import torch
    from transformers import Molmo2ForConditionalGeneration

    with torch.device("meta"):
        model = Molmo2ForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    for part in (model.model.vision_tower, model.model.multi_modal_projector):
        part.to_empty(device="cpu")
        part.initialize_weights()
    video = np.zeros((frames, *VIDEO_SIZE[::-1], 3), np.uint8)
    metadata = {
        "fps": 2.0,
        "total_num_frames": frames,
        "duration": frames / 2,
        "frames_indices": list(range(frames)),
    }
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION["video"]}]}],
        tokenize=False, add_generation_prompt=True,
    )  # fmt: skip
    inputs = processor(text=text, videos=[video], video_metadata=[metadata], do_sample_frames=False,
                       return_tensors="pt")  # fmt: skip
    pixels = torch.rand(inputs["pixel_values_videos"].shape, dtype=torch.bfloat16) * 2 - 1
    rows = []
    for chunk in (VISION_CHUNK, None):
        chunk_vision(model, chunk)
        reset_peak_rss()
        before, start = rss_gib(), time.perf_counter()
        with torch.inference_mode():
            out = model.model.get_video_features(pixels, inputs["video_token_pooling"], inputs["video_grids"])
        seconds = time.perf_counter() - start
        peak = rss_gib("VmHWM") - before
        del out
        est = estimate_memory(config, precision="bf16", prompt_tokens=int(inputs["input_ids"].shape[-1]),
                              new_tokens=0, num_frames=frames, vision_chunk=chunk)  # fmt: skip
        rows.append(dict(frames=frames, vision_chunk=chunk, measured_gib=round(peak, 3), seconds=round(seconds, 1),
                         estimated_vision_gib=round(est.vision_gb, 3)))  # fmt: skip
    return rows


# ---------------------------------------------------------------------------------------------------------
# Running and reporting


def device_info(device: str) -> dict:
    import torch
    import transformers

    info = {"date": datetime.date.today().isoformat(), "python": platform.python_version(),
            "torch": torch.__version__, "transformers": transformers.__version__}  # fmt: skip
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info["device"] = f"{props.name}, {props.total_memory / GIB:.1f} GiB"
        info["cuda"] = torch.version.cuda
    else:
        cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
        name = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
        ram = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
        ram_gib = int(ram.group(1)) * 1024 / GIB if ram else 0
        cpu = name.group(1) if name else platform.processor()
        info["device"] = f"CPU: {cpu}, {torch.get_num_threads()} threads, {ram_gib:.0f} GiB RAM"
    return info


def run_cpu(
    folder: Path,
    model_name: str = MODELS[0],
    settings: tuple[Setting, ...] = CPU_SETTINGS,
    chunk_frames: int = CHUNK_FRAMES,
) -> dict:
    """Molmo2-4B (or ``model_name``) in bf16 on the CPU: the rows and the vision-chunking comparison."""
    import torch
    from transformers import Molmo2ForConditionalGeneration

    free_large_blocks_at_once()
    processor, ids = offline_processor(folder)
    config = real_shape_config(model_name, ids)
    config.name_or_path = model_name
    # Every setting once on the tiny model first: media decoded and cached, and the code every forward pass
    # runs (kernels, oneDNN's JIT) loaded, so that the baseline holds all that and the peaks only the model:
    # on a GPU the CUDA context plays that part, and the planner's overhead term stands for it.
    tiny = Molmo2ForConditionalGeneration.from_pretrained(folder / "tiny-molmo2", dtype=torch.bfloat16)
    for setting in settings:
        measure(tiny.eval(), processor, config, setting, "bf16", 2, folder)
    del tiny
    reset_peak_rss()
    baseline = rss_gib()
    print(f"{model_name}: random bf16 weights on the CPU (RSS before: {baseline:.2f} GiB)", flush=True)
    model = random_model(config, torch.bfloat16, "cpu")
    weights = rss_gib() - baseline
    rows = []
    for setting in settings:
        print(f"  {setting.name} ...", flush=True)
        rows.append(measure(model, processor, config, setting, "bf16", CPU_NEW_TOKENS, folder, baseline))
    del model
    gc.collect()
    print(f"  vision tower and adapter alone, {chunk_frames} frames, chunked and all at once ...", flush=True)
    chunking = vision_chunking_on_cpu(config, processor, chunk_frames)
    info = device_info("cpu")
    info["measured"] = (
        "peak RSS (VmHWM) above the RSS before the weights (after a warm-up on the tiny model); estimate "
        "without the CUDA overhead"
    )
    info["weights"] = {
        "measured_gib": round(weights, 3),
        "estimated_gib": round(estimate_memory(config, precision="bf16", prompt_tokens=0).weights_gb, 3),
    }
    return info | {"rows": rows, "vision_chunking": chunking}


def run_cuda(folder: Path) -> dict:
    """Every lesson setting for each model and precision that fits this GPU."""
    import torch

    from molmo_nb_utils import load_model

    processor, ids = offline_processor(folder)
    total = torch.cuda.get_device_properties(0).total_memory / GIB
    half = ["bf16"] if torch.cuda.is_bf16_supported() else []
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
    rows = []
    for name in MODELS:
        config = real_shape_config(name, ids)
        config.name_or_path = name
        for precision in [*half, "fp16", "4bit"]:
            settings = [*LESSONS, *(s for s in GPU_EXTRAS if precision == "fp16" or not s.kv_offload)]
            if precision == "4bit":
                compute = half[0] if half else "fp16"
                saved = folder / f"{name.split('/')[-1]}-random"
                if not (saved / "config.json").is_file():  # 4-bit comes from a checkpoint: write one
                    weights = estimate_memory(config, precision=compute, prompt_tokens=0).weights_gb
                    model = random_model(config, dtypes[compute], "cuda" if weights < 0.8 * total else "cpu")
                    model.save_pretrained(saved)
                    processor.save_pretrained(saved)
                    del model
                    torch.cuda.empty_cache()
                dtype_name = {"bf16": "bfloat16", "fp16": "float16"}[compute]
                model, _ = load_model(saved, dtype=dtype_name, quantization="4bit")
            else:
                weights = estimate_memory(config, precision=precision, prompt_tokens=0).weights_gb
                if weights > 0.9 * total:
                    print(
                        f"{name} {precision}: {weights:.1f} GiB of weights do not fit {total:.1f} GiB, skipped"
                    )
                    continue
                model = random_model(config, dtypes[precision], "cuda")
            for setting in settings:
                print(f"{name} {precision}: {setting.name} ...", flush=True)
                try:
                    rows.append(measure(model, processor, config, setting, precision, GPU_NEW_TOKENS, folder))
                except Exception as err:  # out of memory and the like: noted, the other rows still run
                    rows.append(dict(model=name, setting=setting.name, precision=precision,
                                     error=f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"))  # fmt: skip
            del model
            gc.collect()
            torch.cuda.empty_cache()
    info = device_info("cuda")
    info["measured"] = "torch.cuda.max_memory_allocated; estimate without the CUDA overhead allowance"
    return info | {"rows": rows, "training": training_rows(folder, processor, ids)}


TRAINING_STEPS = 20


def training_rows(folder: Path, processor: Any, ids: dict[str, int]) -> list[dict]:
    """``TRAINING_STEPS`` fine_tune steps of Molmo2-4B (random weights of the released shapes) on one 1280x720
    image, in QLoRA (4-bit base) and in 16-bit LoRA, gradient checkpointing on: the peak of
    torch.cuda.max_memory_allocated and the time per step, next to ``estimate_training_memory`` (CUDA only)."""
    import torch

    from molmo_nb_utils import load_dataset, load_model, prepare_inputs, user_message
    from molmo_nb_utils.memory import estimate_training_memory
    from molmo_nb_utils.training import fine_tune, training_examples

    name = "allenai/Molmo2-4B"
    half = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    dtype_name = {"bf16": "bfloat16", "fp16": "float16"}[half]
    saved = folder / "Molmo2-4B-random"  # written by run_cuda's 4-bit rows
    if not (saved / "config.json").is_file():
        config = real_shape_config(name, ids)
        config.name_or_path = name
        model = random_model(config, getattr(torch, dtype_name), "cuda")
        model.save_pretrained(saved)
        processor.save_pretrained(saved)
        del model
        torch.cuda.empty_cache()
    image = folder / "fine-tune.png"
    make_image(7).save(image)
    items = load_dataset([{"file": str(image), "label": "circle", "points": [[320, 180], [960, 540]]}])
    example = training_examples(items, prompt="Point to the circles.")[0]
    inputs = prepare_inputs(processor, [user_message(image, text=example.prompt)])
    answer = len(processor.tokenizer(example.target, add_special_tokens=False)["input_ids"]) + 1
    rows = []
    for precision in ("4bit", half):
        row = dict(model=name, setting="fine-tune, one image", precision=precision, steps=TRAINING_STEPS)
        estimate = estimate_training_memory(
            name, precision=precision, prompt_tokens=int(inputs["input_ids"].shape[-1]), answer_tokens=answer,
            num_crops=int(inputs["image_num_crops"].sum()),
        )  # fmt: skip
        print(f"{name} {precision}: {TRAINING_STEPS} fine-tuning steps ...", flush=True)
        try:
            quantization = "4bit" if precision == "4bit" else None
            model, _ = load_model(saved, dtype=dtype_name, quantization=quantization)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            tuned = fine_tune(model, processor, items, folder / f"lora-{precision}", prompt=example.prompt,
                              max_steps=TRAINING_STEPS, save_steps=10 * TRAINING_STEPS,
                              activation_checkpointing=True, progress=False)  # fmt: skip
            torch.cuda.synchronize()
            row |= dict(
                measured_gib=round(torch.cuda.max_memory_allocated() / GIB, 3),
                seconds_per_step=round((time.perf_counter() - start) / TRAINING_STEPS, 3),
            )
            del tuned
        except Exception as err:  # out of memory and the like: noted, the other row still runs
            row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
        row |= dict(estimated_gib=round(estimate.total_gb - estimate.overhead_gb, 3),
                    estimated_total_gib=round(estimate.total_gb, 3))  # fmt: skip
        rows.append(row)
        model = None
        gc.collect()
        torch.cuda.empty_cache()
    return rows


def lesson_estimates(folder: Path) -> list[dict]:
    """The planner's figure (CUDA allowance included) for every lesson setting, model and precision, for
    prompts of the offline processor: what the README shows where nothing was measured."""
    from molmo_nb_utils import prepare_inputs

    processor, ids = offline_processor(folder)
    rows = []
    for setting in (*LESSONS, *GPU_EXTRAS):
        if setting.images:
            inputs = prepare_inputs(processor, messages_for(setting, folder))
            tokens, crops, frames = (
                int(inputs["input_ids"].shape[-1]),
                int(inputs["image_num_crops"].sum()),
                0,
            )
        else:
            frames = planned_frames(setting.seconds, fps=setting.fps, max_frames=setting.max_frames)
            tokens = video_prompt_tokens(
                processor, setting.seconds, fps=setting.fps, max_frames=setting.max_frames
            )
            crops = 0
        for name in MODELS:
            for precision in ("bf16", "fp16", "4bit"):
                row = dict(model=name, setting=setting.name, precision=precision, vision_chunk=setting.vision_chunk,
                           kv_offload=setting.kv_offload, prompt_tokens=tokens, crops=crops, frames=frames,
                           new_tokens=README_NEW_TOKENS)  # fmt: skip
                rows.append(row | estimate_row(real_shape_config(name, ids), row))
    return rows


def refresh_estimates(data: dict) -> dict:
    """The planner's figures in every measured row, recomputed from the row's recorded inputs."""
    for kind in ("cpu", "cuda"):
        for row in data.get(kind, {}).get("rows", []):
            if "error" not in row:
                row.update(estimate_row(load_config(row["model"]), row))
    return data


def table(rows: list[dict]) -> str:
    lines = [f"{'model':18} {'setting':42} {'precision':9} {'measured':>9} {'estimated':>9} {'error':>7} "
             f"{'1st token':>9} {'per token':>9}"]  # fmt: skip
    for row in rows:
        model = row["model"].split("/")[-1]
        if "error" in row:
            lines.append(f"{model:18} {row['setting']:42} {row['precision']:9} {row['error']}")
            continue
        lines.append(
            f"{model:18} {row['setting']:42} {row['precision']:9} {row['measured_gib']:6.2f} GiB "
            f"{row['estimated_gib']:6.2f} GiB {row['error_pct']:+6.1f}% {row['first_token_s']:8.2f}s "
            f"{row['per_token_s']:8.3f}s"
        )
    return "\n".join(lines)


def write(path: Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument(
        "--out", type=Path, default=OUT, help=f"the JSON file (default {OUT.relative_to(REPO_ROOT)})"
    )
    parser.add_argument(
        "--estimates-only", action="store_true", help="refresh the planner's figures, measure nothing"
    )
    args = parser.parse_args(argv)
    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA GPU is visible to PyTorch on this machine.", file=sys.stderr)
        return 1
    if device == "cpu" and not args.estimates_only and not Path("/proc/self/clear_refs").exists():
        print(
            "The CPU check reads peak RSS from /proc (Linux only); run it on Linux or on a GPU.",
            file=sys.stderr,
        )
        return 1
    data = json.loads(args.out.read_text(encoding="utf-8")) if args.out.is_file() else {}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        folder = Path(tmp)
        if not args.estimates_only:
            data[device] = run_cpu(folder) if device == "cpu" else run_cuda(folder)
        data["about"] = (
            "Written by scripts/gpu_check.py (make gpu-check): random weights of the released shapes, media of "
            "real sizes, through chat. GiB = 2**30 bytes. 'estimated_gib' is the planner without its CUDA "
            "allowance (what is measured), 'estimated_total_gib' with it. 'lesson_estimates': the planner for "
            "every lesson setting, which the README shows where no GPU measurement exists."
        )
        data["lesson_estimates"] = lesson_estimates(folder)
    data = refresh_estimates(data)
    write(args.out, data)
    for kind in ("cuda", "cpu"):
        if kind in data:
            print(f"\n{data[kind]['device']} ({data[kind]['date']}): {data[kind]['measured']}")
            print(table(data[kind]["rows"]))
            for row in data[kind].get("vision_chunking", []):
                how = f"{row['vision_chunk']} at a time" if row["vision_chunk"] else "all at once"
                print(f"vision tower + adapter, {row['frames']} frames {how}: {row['measured_gib']:.2f} GiB "
                      f"peak RSS, {row['seconds']:.0f} s (planner's vision working set {row['estimated_vision_gib']:.2f} GiB)")  # fmt: skip
    print(f"\nWrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
