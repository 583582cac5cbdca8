"""Score Molmo2's points, tracks and counts against known answers.

Every score rests on one matching (``matching.match_points``: predicted and true points paired one
to one, the most pairs, then the smallest total distance) and one of two rules (``rules``: Molmo2's
in-mask rule, or ours, within a distance), and says which rule it used. One module per job:

* ``rules``: ``MASK_RULE``, ``DISTANCE_RULE``, their one wording (``rule_name``) and the distance
  rule's threshold (``distance_threshold``, 5% of the image diagonal by default).
* ``matching``: ``match_points`` and Molmo2's ``mask_matches``.
* ``points``: precision, recall and F1 of one image or frame (``point_scores``,
  ``mask_point_scores``), added up with ``sum_scores``.
* ``counts``: counts against true counts (``count_scores``), as Molmo2's ``PointCountEval``.
* ``truth``: video ground truth (``load_ground_truth``, ``GroundTruth.at_plan``: the truth on the
  frames shown).
* ``frames``: the one per-frame loop of every video score (``match_frames``) and a video's points
  pooled over its frames (``video_point_scores``).
* ``tracks``: ``score_points``: hits, whether each object kept one id, and HOTA, DetA and AssA
  (TrackEval, ``hota_scores``).

Every name is importable from ``molmo_nb_utils.evaluation`` as before the split.
"""

from molmo_nb_utils.evaluation.counts import CountScore, count_scores
from molmo_nb_utils.evaluation.frames import FrameMatch, match_frames, video_point_scores
from molmo_nb_utils.evaluation.matching import mask_matches, match_points
from molmo_nb_utils.evaluation.points import PointScore, mask_point_scores, point_scores, sum_scores
from molmo_nb_utils.evaluation.rules import (
    DIAGONAL_FRACTION,
    DISTANCE_RULE,
    MASK_RULE,
    RULES,
    distance_threshold,
    rule_name,
)
from molmo_nb_utils.evaluation.tracks import TrackScore, hota_scores, score_points
from molmo_nb_utils.evaluation.truth import GroundTruth, load_ground_truth, shown_frames

__all__ = [
    "DIAGONAL_FRACTION",
    "DISTANCE_RULE",
    "MASK_RULE",
    "RULES",
    "CountScore",
    "FrameMatch",
    "GroundTruth",
    "PointScore",
    "TrackScore",
    "count_scores",
    "distance_threshold",
    "hota_scores",
    "load_ground_truth",
    "mask_matches",
    "mask_point_scores",
    "match_frames",
    "match_points",
    "point_scores",
    "rule_name",
    "score_points",
    "shown_frames",
    "sum_scores",
    "video_point_scores",
]
