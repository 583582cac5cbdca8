"""Load Molmo2 with transformers' native support, and check the hardware it runs on.

transformers 5 ships ``Molmo2ForConditionalGeneration`` and ``Molmo2Processor``, so no
``trust_remote_code`` is needed. The model id comes from one place, the environment variable
``MOLMO_MODEL_ID`` (default ``allenai/Molmo2-4B``): CI points it at a tiny random model and the
very same notebooks run. The name ``tiny`` means that tiny random model (``molmo_nb_utils.tiny``),
built on first use, so ``load_model("tiny")`` and ``MOLMO_MODEL_ID=tiny`` work offline anywhere.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from huggingface_hub import try_to_load_from_cache
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor, BitsAndBytesConfig

from molmo_nb_utils.architecture import SIXTEEN_BIT_MODULES
from molmo_nb_utils.memory import choose_quantization, gpu_budget_gb
from molmo_nb_utils.paths import REPO_ROOT
from molmo_nb_utils.tiny import TINY_NAME, TinyModelError, build_tiny_molmo2, is_tiny_molmo2, tiny_model_dir
from molmo_nb_utils.vision_chunks import VISION_CHUNK, check_vision_chunk, chunk_vision

DEFAULT_MODEL_ID = "allenai/Molmo2-4B"
HUB_HOST = "huggingface.co"


class ModelLoadError(OSError):
    """The model could not be loaded; the message says what to do.

    An OSError, like the error transformers raises for a model it cannot find, so code that already
    catches that keeps working."""


def model_id() -> str:
    """The model the notebooks use: ``$MOLMO_MODEL_ID`` or ``allenai/Molmo2-4B``."""
    return os.environ.get("MOLMO_MODEL_ID", "").strip() or DEFAULT_MODEL_ID


@dataclass(frozen=True)
class Hardware:
    """What we run on and the dtype we picked for it."""

    device: str
    dtype_name: str
    gpu_name: str | None
    gpu_memory_gb: float | None
    bf16: bool


def detect_hardware() -> Hardware:
    """bf16 on GPUs that support it, fp16 on those that don't (Colab's T4), fp32 on CPU."""
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        bf16 = torch.cuda.is_bf16_supported()
        return Hardware(
            "cuda", "bfloat16" if bf16 else "float16", props.name, props.total_memory / 1024**3, bf16
        )
    return Hardware("cpu", "float32", None, None, False)


def hardware_report() -> str:
    """A few lines for the top of a notebook: versions, GPU, dtype and what is practical."""
    hw = detect_hardware()
    lines = [
        f"Python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__}",
        f"Model: {model_id()}",
    ]
    if hw.device == "cuda":
        lines.append(f"GPU: {hw.gpu_name}, {hw.gpu_memory_gb:.1f} GiB; dtype: {hw.dtype_name}")
        if not hw.bf16:
            lines.append("This GPU has no bfloat16, so the model runs in float16.")
    else:
        lines.append("No GPU found: running on the CPU in float32.")
    if is_tiny_model(model_id()):
        lines.append(
            "This is the tiny random test model that MOLMO_MODEL_ID=tiny asks for: every cell runs, on a CPU "
            "too, and its answers are noise."
        )
    elif hw.device != "cuda":
        lines.append(
            "Molmo2-4B on a CPU takes minutes per answer and ~20 GB of RAM: images are slow but possible, "
            "videos are not practical. Use a GPU runtime, or try the tiny model (see README)."
        )
    return "\n".join(lines)


def is_tiny_model(name: str) -> bool:
    """Whether the model ``name`` is the tiny random test model: the name ``tiny``, or a folder it was built in
    (``make lab MOLMO_MODEL_ID=tiny`` and the tests pass the folder)."""
    if name.strip() == TINY_NAME and not Path(name).is_dir():  # as _resolve reads the name
        return True
    path = Path(name).expanduser()
    if not path.is_dir() and not path.is_absolute():
        path = REPO_ROOT / path  # notebooks run in notebooks/, paths in the README are from the repo root
    return path.is_dir() and is_tiny_molmo2(path)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick check, so that an offline machine gets a clear message instead of minutes of retries.

    Behind a proxy a direct connection proves nothing, so then we let huggingface_hub find out.
    """
    if any(os.environ.get(var) for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    endpoint = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT", f"https://{HUB_HOST}"))
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((endpoint.hostname or HUB_HOST, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def _tiny_folder() -> Path:
    """The tiny random model for the name ``tiny``, built there first if it is missing (seconds, offline)."""
    folder = tiny_model_dir()
    if not (folder / "config.json").is_file():
        print(f"Building the tiny random Molmo2 in {folder} (once, offline; its answers are noise).")
    try:
        return build_tiny_molmo2(folder)
    except (TinyModelError, OSError) as err:
        raise ModelLoadError(
            f"'tiny' means the tiny random model in {folder}, which could not be built there: {err} "
            "Build it elsewhere with python -m molmo_nb_utils.tiny FOLDER and set MOLMO_MODEL_ID to FOLDER."
        ) from None


def _resolve(name: str) -> tuple[str, bool]:
    """Return (what to pass to from_pretrained, local_files_only), or raise ModelLoadError."""
    if name.strip() == TINY_NAME and not Path(name).is_dir():  # a folder called "tiny" here stays a folder
        return str(_tiny_folder()), True
    return resolve_source(name)


@dataclass(frozen=True)
class ModelSource:
    """Where a kind of model comes from, for the messages of ``resolve_source``."""

    variable: str = "MOLMO_MODEL_ID"  # the environment variable that names it
    example: str = DEFAULT_MODEL_ID  # a Hub id of its kind
    build_tiny: str = "python -m molmo_nb_utils.tiny"  # the command that builds its tiny test model
    tiny: str = "a tiny random model built offline: every cell runs, answers are noise"


MOLMO_SOURCE = ModelSource()


def resolve_source(
    name: str, source: ModelSource = MOLMO_SOURCE, error: type[OSError] = ModelLoadError
) -> tuple[str, bool]:
    """(what to pass to from_pretrained, local_files_only) for a local folder or a Hub id, or ``error``
    saying plainly what is wrong: a folder without config.json, a folder that does not exist, or the Hub
    out of reach with the model not in the cache (a quick check, not minutes of retries)."""
    path = Path(name).expanduser()
    if not path.is_dir() and not path.is_absolute() and (REPO_ROOT / path).is_dir():
        path = REPO_ROOT / path  # notebooks run in notebooks/, paths in the README are from the repo root
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise error(
                f"The folder {path} has no config.json, so it is not a saved model. Point {source.variable} at "
                f"the folder that holds config.json, or build the tiny test model: {source.build_tiny}"
            )
        return str(path), True
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") != 1 or "\\" in name
    if looks_like_path:
        raise error(
            f"{name!r} is neither a model folder on this machine (there is no folder {path}) nor a Hub model "
            f"id like '{source.example}'. Check the path, or set {source.variable} to a Hub id, to a folder "
            f"with config.json, or to 'tiny' ({source.tiny})."
        )
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")
    if offline or not _hub_reachable():
        if isinstance(try_to_load_from_cache(name, "config.json"), str):
            return name, True
        raise error(
            f"Cannot load {name!r}: the Hugging Face Hub is not reachable from this machine "
            f"({'HF_HUB_OFFLINE is set' if offline else 'no network'}) and the model is not in the local "
            f"cache. Connect to the internet and run again, or download it elsewhere and set {source.variable} "
            f"to its folder. To try the notebooks offline, set {source.variable}=tiny ({source.tiny})."
        )
    return name, False


def _quantization_config(quantization: str, dtype):
    if not torch.cuda.is_available():
        raise ModelLoadError(
            f"{quantization} loading needs a CUDA GPU (bitsandbytes), and none was found. "
            "Load without quantization on this machine, or switch to a GPU runtime."
        )
    if importlib.util.find_spec("bitsandbytes") is None:  # transformers imports it when it loads
        raise ModelLoadError(
            f"{quantization} loading needs bitsandbytes: pip install bitsandbytes, then restart the kernel."
        )

    # The vision tower and the adapter are small and sensitive to quantization: keep them (and the
    # lm head) in 16-bit (architecture's names, the native model's).
    skip = list(SIXTEEN_BIT_MODULES)
    if quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=dtype,
            bnb_4bit_use_double_quant=True,
            llm_int8_skip_modules=skip,
        )
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)


def _auto_quantization(source: str, local_only: bool, hw: Hardware) -> str | None:
    if hw.device != "cuda":
        return None
    config = AutoConfig.from_pretrained(source, local_files_only=local_only)
    choice = choose_quantization(config, gpu_budget_gb(), half="bf16" if hw.bf16 else "fp16")
    print(f"quantization='auto' on a {hw.gpu_memory_gb:.0f} GiB GPU: {choice or hw.dtype_name}")
    return choice


def load_model(
    name: str | os.PathLike | None = None,
    *,
    dtype: str | None = None,
    quantization: str | None = None,
    device: str | None = None,
    vision_chunk: int | None = VISION_CHUNK,
):
    """Load ``(model, processor)`` for a Hub id, a local folder or ``"tiny"`` (default: ``model_id()``).

    The dtype follows the hardware unless given ("bfloat16", "float16", "float32"); the released
    checkpoints are stored in float32, so leaving it to "auto" would double the memory.
    ``quantization`` is None, "8bit" or "4bit" (bitsandbytes, CUDA only), or "auto": the least
    quantization whose memory estimate fits this GPU (none on a CPU).
    ``vision_chunk``: the vision encoder takes at most this many video frames or image crops at a time
    (``vision_chunks.chunk_vision``): the same answers, and a peak set by the chunk instead of the whole
    video; None encodes them all at once, as transformers does.
    """
    check_vision_chunk(vision_chunk, "vision_chunk")  # before a long download
    name = str(name) if name is not None else model_id()
    source, local_only = _resolve(name)
    hw = detect_hardware()
    dtype = dtype or hw.dtype_name
    if dtype not in ("bfloat16", "float16", "float32"):
        raise ValueError(f"dtype must be 'bfloat16', 'float16' or 'float32', got {dtype!r}")
    if quantization not in (None, "8bit", "4bit", "auto"):
        raise ValueError(f"quantization must be None, '8bit', '4bit' or 'auto', got {quantization!r}")
    if quantization == "auto":
        quantization = _auto_quantization(source, local_only, hw)
    torch_dtype = getattr(torch, dtype)
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "local_files_only": local_only}
    if quantization:
        kwargs["quantization_config"] = _quantization_config(quantization, torch_dtype)
        kwargs["device_map"] = device or quantized_device_map()
    elif (device or hw.device) != "cpu":
        kwargs["device_map"] = device or hw.device
    try:
        processor = AutoProcessor.from_pretrained(source, local_files_only=local_only)
        model = AutoModelForImageTextToText.from_pretrained(source, **kwargs)
    except (OSError, ValueError, KeyError) as err:
        raise ModelLoadError(
            f"Could not load {name!r}: {str(err).splitlines()[0]} "
            "Check the model id or folder; Molmo2 needs transformers>=5.0 (pip install -U transformers)."
        ) from None
    chunk_vision(model, vision_chunk)
    return model.eval(), processor


def quantized_device_map() -> str | dict[str, int]:
    """Where bitsandbytes puts a quantized model: spread over the GPUs ("auto"), except in a data-parallel
    launch (torchrun and accelerate set ``LOCAL_RANK``), where each process holds a whole copy on its own GPU
    (QLoRA in DDP); spread, every process would load onto every GPU."""
    local_rank = os.environ.get("LOCAL_RANK")
    return {"": int(local_rank)} if local_rank is not None and local_rank.isdigit() else "auto"


def _load_part(auto_class, what: str, name: str | os.PathLike | None):
    name = str(name) if name is not None else model_id()
    source, local_only = _resolve(name)
    try:
        return auto_class.from_pretrained(source, local_files_only=local_only)
    except (OSError, ValueError, KeyError) as err:
        raise ModelLoadError(f"Could not load the {what} of {name!r}: {str(err).splitlines()[0]}") from None


def load_processor(name: str | os.PathLike | None = None):
    """Only the processor (tokenizer, image and video settings): enough to count tokens, no weights."""
    return _load_part(AutoProcessor, "processor", name)


def load_model_config(name: str | os.PathLike | None = None):
    """Only the model's config (a few KB): what the memory planner needs, no weights."""
    return _load_part(AutoConfig, "config", name)
