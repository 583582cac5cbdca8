"""The playground of notebook 07: pick media, a task and a prompt; see the answer drawn.

Why a class in the package: the widgets and their wiring are plumbing, not a lesson. The
notebook shows the controls with one call and runs them once with the defaults, so it runs top to
bottom unattended; the Run button runs again with whatever the reader changed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from molmo_nb_utils.asking import VIDEO_SUFFIXES, Answer, chat, user_message
from molmo_nb_utils.drawing import (
    draw_points,
    draw_points_on_images,
    frame_grid,
    render_tracks_video,
    show_video,
)
from molmo_nb_utils.grounding import count_points, group_by_id
from molmo_nb_utils.media import DEFAULT_FPS, TRACKING_FPS, load_image
from molmo_nb_utils.paths import INPUT_DIR, output_path, save_upload

# task: (sample prompt, max new tokens)
TASKS = {
    "ask": ("Describe what you see in one sentence.", 128),
    "point": ("Point to the coins.", 256),
    "count": ("How many coins are there?", 256),
    "track": ("Track the coins.", 1024),
}


class Playground:
    """Controls for one question to Molmo2, and what a run does with them.

    Show it as the last expression of a cell; ``run()`` asks with the current settings (every
    control has a default), streams the answer and draws what it found.
    """

    def __init__(self, model, processor, *, input_dir: Path = INPUT_DIR) -> None:
        import ipywidgets as widgets

        self.model, self.processor = model, processor
        self._saved: dict[str, Path] = {}  # uploads already written, by content hash
        images = sorted(p.name for p in input_dir.glob("*.jpg"))
        videos = sorted(p.name for p in input_dir.glob("*.mp4"))
        self.input_dir = input_dir
        self.media = widgets.ToggleButtons(options=["images", "video"], value="images", description="Media")
        self.image_files = widgets.SelectMultiple(
            options=images, value=[n for n in ("coins.jpg",) if n in images], rows=6, description="Images"
        )
        self.video_file = widgets.Dropdown(
            options=videos,
            value="moving_objects.mp4" if "moving_objects.mp4" in videos else None,
            description="Video",
        )
        self.upload = widgets.FileUpload(accept="image/*,video/*", multiple=True, description="Upload")
        self.task = widgets.ToggleButtons(options=list(TASKS), value="point", description="Task")
        self.prompt = widgets.Text(
            value=TASKS["point"][0], description="Prompt", layout=widgets.Layout(width="640px")
        )
        self.max_new_tokens = widgets.IntSlider(
            value=TASKS["point"][1], min=16, max=2048, step=16, description="Max tokens"
        )
        self.run_button = widgets.Button(description="Run", button_style="primary", icon="play")
        self.output = widgets.Output()
        self.task.observe(self._on_task, names="value")
        self.run_button.on_click(self._on_run)
        self.widget = widgets.VBox(
            [
                self.media,
                self.image_files,
                self.video_file,
                self.upload,
                self.task,
                self.prompt,
                self.max_new_tokens,
                self.run_button,
                self.output,
            ]
        )

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def _on_task(self, change: dict) -> None:
        self.prompt.value, self.max_new_tokens.value = TASKS[change["new"]]
        if change["new"] == "track":
            self.media.value = "video"

    def _on_run(self, _button: Any) -> None:
        self.output.clear_output()
        with self.output:
            self.run()

    def _uploads(self, videos: bool) -> list[tuple[str, bytes]]:
        """(name, bytes) of the uploaded videos (videos=True) or images, whatever ipywidgets' version."""
        files = self.upload.value
        if isinstance(files, dict):  # ipywidgets 7: {name: {"content": ...}}
            files = [{"name": name, **f} for name, f in files.items()]
        return [
            (f["name"], bytes(f["content"]))
            for f in files
            if (Path(f["name"]).suffix.lower() in VIDEO_SUFFIXES) == videos
        ]

    def chosen_media(self) -> list[Any] | Path:
        """The images (a list) or the video (a path) to ask about; uploads replace the picked files."""
        if self.media.value == "images":
            images = [load_image(content) for _, content in self._uploads(videos=False)]
            images = images or [load_image(self.input_dir / name) for name in self.image_files.value]
            if not images:
                raise ValueError("No image chosen: pick at least one in the Images list, or upload one.")
            return images
        uploaded = self._uploads(videos=True)
        if not uploaded:
            if not self.video_file.value:
                raise ValueError("No video chosen: pick one in the Video list, or upload one.")
            return self.input_dir / self.video_file.value
        name, content = uploaded[0]
        key = hashlib.sha256(content).hexdigest()
        if key not in self._saved:  # a second run does not save the same upload again
            self._saved[key] = save_upload(name, content)  # video readers need a file
        return self._saved[key]

    def run(self) -> Answer | None:
        """Ask with the current settings, stream the answer, draw what it found; return the answer."""
        from IPython.display import display

        source = self.chosen_media()
        is_video = isinstance(source, Path)
        if self.task.value == "track" and not is_video:
            print("Tracking needs a video: set Media to 'video' and run again.")
            return None
        media = [source] if is_video else source
        fps = TRACKING_FPS if self.task.value == "track" else DEFAULT_FPS
        answer = chat(
            self.model,
            self.processor,
            [user_message(*media, text=self.prompt.value)],
            max_new_tokens=self.max_new_tokens.value,
            stream=True,
            fps=fps,
        )
        print()
        if self.task.value == "ask":
            return answer
        if self.task.value == "track":
            tracks = answer.tracks()
            print(f"Tracks found: {len(group_by_id(tracks))}")
            out = output_path("playground_tracks.mp4")
            display(show_video(render_tracks_video(answer.video, tracks, out, max_width=640, progress=False)))
            return answer
        points = answer.points()
        print(f"Points found: {count_points(points)}")
        if is_video:
            cols = 4 if len(answer.video.timestamps) <= 16 else 8
            display(frame_grid(answer.video, points=points, cols=cols))
        elif len(answer.images) == 1:
            display(draw_points(answer.images[0], points))
        else:
            display(draw_points_on_images(list(answer.images), points))
        return answer
