"""GPU memory planner for Molmo2: will this model, precision and video or image setting fit on my GPU?

Every figure is arithmetic on the architecture in transformers' ``models/molmo2/modeling_molmo2.py``
(5.x), so it works offline, before any weights are downloaded. Sizes are GiB (2**30 bytes), the unit
torch.cuda and Colab report. These are estimates: ``make gpu-check`` (scripts/gpu_check.py) measures
them against real runs and writes notebooks/gpu_check.json. Keep some headroom on a tight budget.
One module per job:

* ``configs``: the released shapes offline (``KNOWN_CONFIGS``, ``load_config``), parameters counted
  on the meta device (``count_parameters``, ``lora_parameter_count``), what a weight costs.
* ``tokens``: prompt tokens counted by the processor (``count_prompt_tokens``,
  ``video_prompt_tokens``) or estimated before the media exist.
* ``inference``: one ``chat`` call (``estimate_memory``, ``MemoryEstimate``).
* ``fine_tuning``: one LoRA or QLoRA step (``estimate_training_memory``).
* ``segmenter``: SAM 2 beside Molmo2 (``segmenter_memory``, the released sizes ``SAM2_SIZES``).
* ``advice``: the largest setting that fits (``suggest_settings``), the next one after an
  out-of-memory error (``next_setting_advice``), the precision ``load_model`` picks, the T4 budget.

Every name is importable from ``molmo_nb_utils.memory`` as before the split.
"""

from molmo_nb_utils.media import planned_frames
from molmo_nb_utils.memory.advice import (
    FPS_STEPS,
    MAX_CROPS_STEPS,
    MAX_FRAMES_STEPS,
    T4_GIB,
    T4_MEMORY_BYTES,
    Suggestion,
    choose_quantization,
    gpu_budget_gb,
    next_setting_advice,
    suggest_settings,
)
from molmo_nb_utils.memory.configs import (
    GIB,
    KNOWN_CONFIGS,
    PRECISIONS,
    QUANT_BYTES,
    count_parameters,
    load_config,
    lora_parameter_count,
)
from molmo_nb_utils.memory.fine_tuning import TrainingMemoryEstimate, estimate_training_memory
from molmo_nb_utils.memory.inference import IMAGE_CROPS, OVERHEAD_GB, MemoryEstimate, estimate_memory
from molmo_nb_utils.memory.segmenter import SAM2_SIZES, SamSize, SegmenterMemory, segmenter_memory
from molmo_nb_utils.memory.tokens import (
    PROMPT_TEXT_TOKENS,
    count_prompt_tokens,
    image_tokens_estimate,
    video_prompt_tokens,
    video_tokens_estimate,
)

__all__ = [
    "FPS_STEPS",
    "GIB",
    "IMAGE_CROPS",
    "KNOWN_CONFIGS",
    "MAX_CROPS_STEPS",
    "MAX_FRAMES_STEPS",
    "OVERHEAD_GB",
    "PRECISIONS",
    "PROMPT_TEXT_TOKENS",
    "QUANT_BYTES",
    "SAM2_SIZES",
    "T4_GIB",
    "T4_MEMORY_BYTES",
    "MemoryEstimate",
    "SamSize",
    "SegmenterMemory",
    "Suggestion",
    "TrainingMemoryEstimate",
    "choose_quantization",
    "count_parameters",
    "count_prompt_tokens",
    "estimate_memory",
    "estimate_training_memory",
    "gpu_budget_gb",
    "image_tokens_estimate",
    "load_config",
    "lora_parameter_count",
    "next_setting_advice",
    "planned_frames",
    "segmenter_memory",
    "suggest_settings",
    "video_prompt_tokens",
    "video_tokens_estimate",
]
