"""Run Molmo2 over a dataset of your own, resumably, and measure how good the answers are.

Why: after the lessons, the next step is a folder of your own images or videos and the question
"how good is it on *my* data?". One module per concern:

* ``items``: a folder (linked subfolders too), or a JSON or CSV list (commas, tabs or semicolons)
  with optional ground truth (``load_dataset``); ``input/coin_table.json`` is an example. Bad lists
  are refused before any GPU time is spent.
  ``item_prompt`` is the one rule for what an item is asked (and trained on).
* ``results``: the results file, one JSON line per item, forced to disk before the next item
  starts. A killed run loses at most the item it was writing; every line carries the run's
  settings (``RunSettings``: the prompt, how media are shown (``MediaSettings``), the model's identity:
  name, adapter, a fingerprint of its weights, their precision and quantization) and what the item's
  file held, so answers of another model, prompt or file are never mixed in.
* ``running``: the run (``run_dataset``), one item or a batch per ``generate`` call, resumable;
  answers written by hand for worked examples (``worked_answer``, ``results_from_answers``).
* ``sharded``: the same run over several processes or GPUs (``accelerate launch``), one shard
  file per process, merged deterministically.
* ``scoring``: predicted to true points matched one to one within 5% of the image diagonal (the
  hit rule of 04_video_pointing), counts (the count rule of 03_pointing), track identities.
* ``pictures`` and ``exports``: what to look at, and files that pandas, CVAT, FiftyOne and
  pycocotools read (frames named as ``coco_images`` names them, as the mask export does).
* ``coco``: a COCO instances file (CVAT, Label Studio, Roboflow) as items with masks, fitted to the
  photos as they are shown.
* ``coin_masks``: true masks on the frames shown (``true_masks``: the truth's own, else the sample
  coins' by one rule, ``coin_mask``) and the sample items with their coins' masks (``with_coin_masks``).

The lesson is ``08_your_dataset.ipynb``.
"""

from molmo_nb_utils.dataset.coin_masks import COIN_DIAMETERS, coin_mask, true_masks, with_coin_masks
from molmo_nb_utils.dataset.exports import export_coco, export_csv, export_points_csv, safe_cell
from molmo_nb_utils.dataset.items import DEFAULT_PROMPT, DatasetItem, item_prompt, load_dataset
from molmo_nb_utils.dataset.pictures import draw_result, plot_counts
from molmo_nb_utils.dataset.results import ItemResult, load_results, model_identity
from molmo_nb_utils.dataset.running import RunSettings, results_from_answers, run_dataset, worked_answer
from molmo_nb_utils.dataset.scoring import DatasetScore, ItemScore, score_results, score_table, worst_items
from molmo_nb_utils.dataset.sharded import merge_shards, run_sharded

__all__ = [
    "COIN_DIAMETERS",
    "DEFAULT_PROMPT",
    "DatasetItem",
    "DatasetScore",
    "ItemResult",
    "ItemScore",
    "RunSettings",
    "coin_mask",
    "draw_result",
    "export_coco",
    "export_csv",
    "export_points_csv",
    "item_prompt",
    "load_dataset",
    "load_results",
    "merge_shards",
    "model_identity",
    "plot_counts",
    "results_from_answers",
    "run_dataset",
    "run_sharded",
    "safe_cell",
    "score_results",
    "score_table",
    "true_masks",
    "with_coin_masks",
    "worked_answer",
    "worst_items",
]
