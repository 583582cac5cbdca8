"""The playground of notebook 07: pick media, a task and a prompt; see the answer drawn.

Why a class in the package: the widgets and their wiring are plumbing, not a lesson. The
notebook shows the controls with one call and runs them once with the defaults, so it runs top to
bottom unattended; the Run button runs again with whatever the reader changed.

What the controls show is what a run uses: only the list of the chosen kind of media is shown, an
upload is added to that list and selected (so the list names what will be used), and "Clear
uploads" takes uploads out again. Pictures are shown at most ``MAX_DISPLAY_HEIGHT`` pixels high,
so a portrait photo or phone video fits on the screen.
"""

from __future__ import annotations

import datetime
import math
from pathlib import Path
from typing import Any

import ipywidgets as widgets
from IPython.display import display
from PIL import Image

from molmo_nb_utils.asking import VIDEO_SUFFIXES, Answer, chat, user_message
from molmo_nb_utils.drawing import (
    DISPLAY_WIDTH,
    draw_masks,
    draw_masks_on_images,
    draw_points,
    draw_points_on_images,
    frame_grid,
    render_masks_video,
    render_tracks_video,
    show_video,
)
from molmo_nb_utils.grounding import count_points, group_by_id
from molmo_nb_utils.masks import load_segmenter, segment
from molmo_nb_utils.media import DEFAULT_FPS, TRACKING_FPS, load_image, video_info
from molmo_nb_utils.paths import INPUT_DIR, clean_filename, output_path, save_upload

MAX_DISPLAY_HEIGHT = 640  # pixels: a portrait picture taller than this is shown smaller
UPLOADED = " (uploaded)"  # how an upload is named in the lists, after its file name

# task: (sample prompt, max new tokens)
TASKS = {
    "ask": ("Describe what you see in one sentence.", 128),
    "point": ("Point to the coins.", 256),
    "count": ("How many coins are there?", 256),
    "track": ("Track the coins.", 1024),
    "segment": ("Point to the coins.", 256),  # the points become SAM 2 masks; on a video, tracks work too
}
# Tasks that ask about a video at tracking's 8 fps: what SAM 2 follows from frame to frame
TRACKING_TASKS = ("track", "segment")
# The answer shape each task is kept to when "Constrain" is ticked (molmo_nb_utils.constrain)
TASK_CONSTRAINTS = {"ask": True, "point": "points", "count": "count", "track": "tracks", "segment": "points"}


def default_max_new_tokens(task: str, media: str) -> int:
    """The answer length ``task`` gets by default on ``media`` ("images" or "video"). A task that asks about a
    video at tracking's 8 fps gets tracking's: its answer names every object on every frame shown, and one cut
    short gives SAM 2 only the objects of the first frames."""
    if media == "video" and task in TRACKING_TASKS:
        return TASKS["track"][1]
    return TASKS[task][1]


def display_size(
    width: int, height: int, max_width: int = DISPLAY_WIDTH, max_height: int = MAX_DISPLAY_HEIGHT
) -> tuple[int, int]:
    """The size to show a ``width`` x ``height`` picture at: never enlarged, within both limits."""
    scale = min(1.0, max_width / width, max_height / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def fit_for_display(picture: Image.Image, max_height: int = MAX_DISPLAY_HEIGHT) -> Image.Image:
    """``picture`` shrunk to fit the display (a 1213 px tall portrait would fill two screens)."""
    size = display_size(*picture.size, max_height=max_height)
    return picture if size == picture.size else picture.resize(size, Image.Resampling.LANCZOS)


def grid_columns(frames: int, width: int, height: int, grid_width: int = DISPLAY_WIDTH) -> int:
    """Columns of a frame grid that keep it within ``MAX_DISPLAY_HEIGHT``: 4 for landscape
    frames when they fit, more for many frames or for portrait (phone) videos; at most 12."""
    for cols in range(4, 13):
        thumb = (grid_width - 4 * (cols - 1)) / cols
        rows = math.ceil(frames / cols)
        if rows * (thumb * height / width + 20) <= MAX_DISPLAY_HEIGHT:
            return cols
    return 12


class Playground:
    """Controls for one question to Molmo2, and what a run does with them.

    Show it as the last expression of a cell; ``run()`` asks with the current settings (every
    control has a default), streams the answer and draws what it found.
    """

    def __init__(
        self,
        model,
        processor,
        *,
        input_dir: Path = INPUT_DIR,
        segmenter: tuple | None = None,
        constrain: bool = False,
    ) -> None:
        """``segmenter``: SAM 2's ``(model, processor)`` for the "segment" task; loaded on its first run
        (``load_segmenter()``) when not given, so the other tasks never load it. ``constrain``: the
        "Constrain" box starts ticked, keeping each answer to its task's shape of Molmo2's grammar."""
        self.model, self.processor = model, processor
        self.segmenter = segmenter
        self.input_dir = input_dir
        self._images = sorted(p.name for p in input_dir.glob("*.jpg"))
        self._videos = sorted(p.name for p in input_dir.glob("*.mp4"))
        self._uploaded_images: dict[str, Image.Image] = {}  # list label -> image
        self._uploaded_videos: dict[str, Path] = {}  # list label -> the file it was saved to
        # What the upload button counts: every file kept since the last "Clear uploads", not only the last
        # pick (ipywidgets shows "Upload (n)" for the files in its value, and each pick replaces the value).
        self._kept: tuple[dict, ...] = ()
        self._counting = False  # True while the count is written back to the widget
        self.media = widgets.ToggleButtons(options=["images", "video"], value="images", description="Media")
        self.image_files = widgets.SelectMultiple(
            options=self._images,
            value=[n for n in ("coins.jpg",) if n in self._images],
            rows=6,
            description="Images",
        )
        self.video_file = widgets.Dropdown(
            options=self._videos,
            value="moving_objects.mp4" if "moving_objects.mp4" in self._videos else None,
            description="Video",
            layout=widgets.Layout(width="420px"),
        )
        self.upload = widgets.FileUpload(accept="image/*,video/*", multiple=True, description="Upload")
        self.clear_button = widgets.Button(description="Clear uploads", icon="trash")
        self.task = widgets.ToggleButtons(options=list(TASKS), value="point", description="Task")
        self.prompt = widgets.Text(
            value=TASKS["point"][0], description="Prompt", layout=widgets.Layout(width="640px")
        )
        self.max_new_tokens = widgets.IntSlider(
            value=TASKS["point"][1], min=16, max=2048, step=16, description="Max tokens"
        )
        self.constrain = widgets.Checkbox(
            value=bool(constrain), description="Constrain the answer to Molmo2's format (it always parses)",
            layout=widgets.Layout(width="640px"),
        )  # fmt: skip
        self.run_button = widgets.Button(description="Run", button_style="primary", icon="play")
        self.output = widgets.Output()
        self.task.observe(self._on_task, names="value")
        self.media.observe(self._on_media, names="value")
        self.upload.observe(self._on_upload, names="value")
        self.clear_button.on_click(lambda _button: self.clear_uploads())
        self.run_button.on_click(self._on_run)
        self.widget = widgets.VBox(
            [
                self.media,
                self.image_files,
                self.video_file,
                widgets.HBox([self.upload, self.clear_button]),
                self.task,
                self.prompt,
                self.max_new_tokens,
                self.constrain,
                self.run_button,
                self.output,
            ]
        )
        self._on_media({"new": self.media.value})

    def _ipython_display_(self) -> None:
        display(self.widget)

    def _on_task(self, change: dict) -> None:
        self.prompt.value = TASKS[change["new"]][0]
        if change["new"] == "track":
            self.media.value = "video"
        self.max_new_tokens.value = default_max_new_tokens(change["new"], self.media.value)

    def _on_media(self, change: dict) -> None:
        """Show only the list the chosen media uses; the answer length follows it unless the reader chose one."""
        videos = change["new"] == "video"
        self.image_files.layout.display = "none" if videos else None
        self.video_file.layout.display = None if videos else "none"
        old = change.get("old")
        if old and self.max_new_tokens.value == default_max_new_tokens(self.task.value, old):
            self.max_new_tokens.value = default_max_new_tokens(self.task.value, change["new"])

    def _on_run(self, _button: Any) -> None:
        self.output.clear_output()
        with self.output:
            self.run()

    def _on_upload(self, change: dict) -> None:
        if self._counting:  # our own count of what is kept (below): nothing new
            return
        files = _uploaded_files(change["new"])
        try:
            kept = self.add_uploads(files)
        except ValueError as err:  # an unreadable image: say so under the button
            self.output.append_stdout(f"{err}\n")
            kept = getattr(err, "kept", 0)
        self._count_kept([name for name, _ in files[:kept]])

    def _count_kept(self, names: list[str]) -> None:
        """Make the button's "(n)" the number of uploads listed, keeping no file contents in the widget."""
        if isinstance(self.upload.value, dict):  # ipywidgets 7: its counter cannot be set
            return
        when = datetime.datetime.now(datetime.timezone.utc)
        entry = {"type": "", "size": 0, "content": memoryview(b""), "last_modified": when}
        self._kept = (*self._kept, *({**entry, "name": name} for name in names))
        self._counting = True
        try:
            self.upload.value = self._kept
        finally:
            self._counting = False

    def add_uploads(self, files: list[tuple[str, bytes]]) -> int:
        """Add uploaded (name, bytes) files to the lists and select them, so a run uses them; how many were added.

        Images are read now (a broken file is reported at once, its ``ValueError`` carrying ``kept``, the
        number added before it); a video is saved under ``downloaded_data/outputs/uploads/`` (video
        readers need a file), once per upload.
        """
        new_images, new_videos = [], []
        try:
            for name, content in files:
                shown = clean_filename(name, default="upload")  # the name the reader gave it, made safe
                if Path(name).suffix.lower() in VIDEO_SUFFIXES:
                    path = save_upload(name, content)  # "clip-1.mp4" when an earlier "clip.mp4" is there
                    label = _label(shown, self._uploaded_videos)
                    self._uploaded_videos[label] = path
                    new_videos.append(label)
                else:
                    try:
                        image = load_image(content)
                    except ValueError as err:
                        err.kept = len(new_images) + len(new_videos)
                        raise
                    label = _label(shown, self._uploaded_images)
                    self._uploaded_images[label] = image
                    new_images.append(label)
        finally:  # the files read before a broken one are listed all the same
            if new_images:
                self.image_files.options = [*self._uploaded_images, *self._images]
                self.image_files.value = tuple(new_images)
            if new_videos:
                self.video_file.options = [*self._uploaded_videos, *self._videos]
                self.video_file.value = new_videos[0]
            if new_videos or new_images:
                self.media.value = "video" if new_videos else "images"
        return len(new_images) + len(new_videos)

    def clear_uploads(self) -> None:
        """Take every upload out of the lists and go back to the sample media."""
        self._uploaded_images.clear()
        self._uploaded_videos.clear()
        self.image_files.options = self._images
        self.image_files.value = [n for n in ("coins.jpg",) if n in self._images]
        self.video_file.options = self._videos
        self.video_file.value = "moving_objects.mp4" if "moving_objects.mp4" in self._videos else None
        self._kept = ()
        try:
            self.upload.value = ()  # ipywidgets 8; the observer sees no files
        except Exception:  # ipywidgets 7 cannot reset the upload widget: its counter stays
            pass

    def chosen_media(self) -> list[Any] | Path:
        """The images (a list) or the video (a path) that the lists select."""
        if self.media.value == "images":
            uploaded = self._uploaded_images
            images = [
                uploaded[name] if name in uploaded else load_image(self.input_dir / name)
                for name in self.image_files.value
            ]
            if not images:
                raise ValueError("No image chosen: pick at least one in the Images list, or upload one.")
            return images
        name = self.video_file.value
        if not name:
            raise ValueError("No video chosen: pick one in the Video list, or upload one.")
        return self._uploaded_videos.get(name) or self.input_dir / name

    def run(self) -> Answer | None:
        """Ask with the current settings, stream the answer, draw what it found; return the answer."""
        source = self.chosen_media()
        is_video = isinstance(source, Path)
        if self.task.value == "track" and not is_video:
            print("Tracking needs a video: set Media to 'video' and run again.")
            return None
        media = [source] if is_video else source
        fps = TRACKING_FPS if self.task.value in TRACKING_TASKS else DEFAULT_FPS
        answer = chat(
            self.model,
            self.processor,
            [user_message(*media, text=self.prompt.value)],
            max_new_tokens=self.max_new_tokens.value,
            stream=True,
            fps=fps,
            constrain=TASK_CONSTRAINTS[self.task.value] if self.constrain.value else None,
        )
        print()
        if self.task.value == "ask":
            return answer
        if self.task.value == "segment":
            self._show_masks(answer)
            return answer
        if self.task.value == "track":
            tracks = answer.tracks()
            print(f"Tracks found: {len(group_by_id(tracks))}")
            out = render_tracks_video(
                answer.video, tracks, output_path("playground_tracks.mp4"), max_width=640, progress=False
            )
            info = video_info(out)
            display(show_video(out, width=display_size(info.width, info.height, max_width=640)[0]))
            return answer
        points = answer.points()
        print(f"Points found: {count_points(points)}")
        if is_video:
            width, height = answer.video.size
            cols = grid_columns(len(answer.video.timestamps), width, height)
            grid = frame_grid(answer.video, points=points, cols=cols, width=DISPLAY_WIDTH)
            display(fit_for_display(grid))
        elif len(answer.images) == 1:
            display(fit_for_display(draw_points(answer.images[0], points)))
        else:
            display(fit_for_display(draw_points_on_images(list(answer.images), points)))
        return answer

    def _show_masks(self, answer: Answer) -> None:
        """SAM 2's masks for the answer's points (or tracks), drawn on the pictures, or as a video."""
        if self.segmenter is None:
            self.segmenter = load_segmenter()
        masks = segment(*self.segmenter, answer)
        print(
            f"Masks: {len(masks.ids)} ids, on {len(masks)} {'frames' if answer.video is not None else 'images'}"
        )
        if answer.video is not None:
            out = render_masks_video(answer.video, masks, output_path("playground_masks.mp4"), progress=False)
            info = video_info(out)
            display(show_video(out, width=display_size(info.width, info.height, max_width=640)[0]))
        elif len(answer.images) == 1:
            display(fit_for_display(draw_masks(answer.images[0], masks[0])))
        else:
            display(fit_for_display(draw_masks_on_images(list(answer.images), list(masks))))


def _uploaded_files(value: Any) -> list[tuple[str, bytes]]:
    """(name, bytes) of each file in a FileUpload's value, whatever ipywidgets' version."""
    if isinstance(value, dict):  # ipywidgets 7: {name: {"content": ...}}
        value = [{"name": name, **f} for name, f in value.items()]
    return [(f["name"], bytes(f["content"])) for f in value]


def _label(name: str, taken: dict) -> str:
    """The list entry of an upload: "name (uploaded)", numbered when the name is already listed."""
    label, n = f"{name}{UPLOADED}", 1
    while label in taken:
        n += 1
        label = f"{name}{UPLOADED} {n}"
    return label
