"""Show what Molmo2 pointed at: points, tracks and masks on images and frames, videos, plots.

Every function returns a picture (a PIL image, an RGB ``uint8`` array or a matplotlib figure) or
writes a file and returns its path, so a notebook can both show and save the result.

One job a module:

* ``style``: one colour per id (``color_for``), sizes that grow with the image, fonts, titles;
* ``points``: numbered dots on images (``draw_points``, ``draw_points_on_images``) and on a grid
  of video frames (``frame_grid``);
* ``tracks``: an object's point, id and fading trail on one frame (``draw_tracks``);
* ``masks``: masks with their boxes and ids (``draw_masks``, ``draw_masks_on_images``,
  ``render_masks_video``);
* ``video``: browser-playable H.264 files (``write_video``, ``render_tracks_video``), GIF previews
  (``write_gif``) and inline players (``show_video``); frames are read with ``media``'s decoder;
* ``plots``: when each id was seen (``plot_timeline``) and each track's path
  (``plot_trajectories``).
"""

from molmo_nb_utils.drawing.masks import (
    draw_masks,
    draw_masks_on_images,
    masked_frames,
    render_masks_video,
)
from molmo_nb_utils.drawing.plots import plot_timeline, plot_trajectories
from molmo_nb_utils.drawing.points import draw_points, draw_points_on_images, frame_grid
from molmo_nb_utils.drawing.style import BLACK, DISPLAY_WIDTH, PALETTE, WHITE, color_for, with_header
from molmo_nb_utils.drawing.tracks import draw_tracks
from molmo_nb_utils.drawing.video import (
    VIDEO_CRF,
    VIDEO_PRESET,
    render_tracks_video,
    show_video,
    write_gif,
    write_video,
)

__all__ = [
    "BLACK",
    "DISPLAY_WIDTH",
    "PALETTE",
    "VIDEO_CRF",
    "VIDEO_PRESET",
    "WHITE",
    "color_for",
    "draw_masks",
    "draw_masks_on_images",
    "draw_points",
    "draw_points_on_images",
    "draw_tracks",
    "frame_grid",
    "masked_frames",
    "plot_timeline",
    "plot_trajectories",
    "render_masks_video",
    "render_tracks_video",
    "show_video",
    "with_header",
    "write_gif",
    "write_video",
]
