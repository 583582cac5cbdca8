"""The two rules that decide whether a predicted point found its object, and their one wording.

Every score says which rule it used:

* ``MASK_RULE`` ("in mask"), Molmo2's evaluation (allenai/molmo2, ``olmo/eval/evaluators.py``,
  ``PointingEval``): predictions and true points are paired by optimal assignment on distance
  (no limit), and a pair counts only if the prediction, rounded to a pixel, lies inside the true
  object's mask. Scores by this rule can stand next to the paper's (on your data, not theirs).
* ``DISTANCE_RULE`` ("within distance"), ours, for truth without masks: a pair counts within a
  distance, by default 5% of the image diagonal (``distance_threshold``).

``rule_name`` is how a rule is named wherever scores are printed (``DatasetScore``, ``score_table``).
"""

from __future__ import annotations

import math
import numbers

__all__ = ["DIAGONAL_FRACTION", "DISTANCE_RULE", "MASK_RULE", "RULES", "distance_threshold", "rule_name"]

# Pointing threshold as a fraction of the image diagonal. Our choice, not the paper's: Molmo2's
# evaluation counts a point as correct when it falls inside the object's segmentation mask, and
# point-only ground truth has no masks. 5% of the diagonal is 37 px on a 640x360 video, about the
# radius of the sample videos' coins.
DIAGONAL_FRACTION = 0.05
MASK_RULE = "in mask"  # Molmo2's: a matched point counts if it lies inside its object's mask
DISTANCE_RULE = "within distance"  # ours: a matched point counts within a distance of the true point
# How each rule is named where scores are printed; ``rule_name`` adds the distance rule's fraction.
RULES = {
    MASK_RULE: "in the object's mask (Molmo2's rule)",
    DISTANCE_RULE: "within distance (our rule)",
}
MIXED = "by both rules (in mask where the truth has masks, else within distance: see score_table)"


def rule_name(rule: str, fraction: float | None = None) -> str:
    """How ``rule`` is named in printed scores: the distance rule with its share of the diagonal when
    ``fraction`` is given; "mixed" (a sum over both rules) says so."""
    if rule == DISTANCE_RULE and fraction is not None:
        return f"within {fraction:.0%} of the diagonal (our rule)"
    return RULES.get(rule, MIXED)


def check_distance(value: float, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"{name} must be a distance > 0 pixels, got {value!r}")


def distance_threshold(width: float, height: float, fraction: float = DIAGONAL_FRACTION) -> float:
    """A pointing threshold in pixels that scales with the image: ``fraction`` of its diagonal.

    One rule for images of any size. This is our stand-in, not the Molmo2 paper's rule: its
    pointing evaluation needs segmentation masks (a matched point counts if it lies inside the
    object), which point-only ground truth lacks. 5% of the diagonal is 40 px at 640x480.
    """
    for name, value in (("width", width), ("height", height)):
        check_distance(value, name)
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1] of the image diagonal, got {fraction!r}")
    return fraction * math.hypot(width, height)
