"""Is rendering an annotated tracking video faster than real time? (The issue asks for it on 2 CPU cores.)

Generates (once, cached under downloaded_data/bench/) a 10 s 1280x720 30 fps H.264 clip with moving
texture, makes synthetic tracks for 3 objects sampled at 8 fps (one occluded for a while, one
appearing late), times ``render_tracks_video`` and prints seconds, frames/s and the real-time
factor (video seconds / wall seconds; above 1 is faster than real time).

    python scripts/benchmark_render.py [--repeat 3] [--max-width 640]
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import av
import cv2
import numpy as np

from molmo_nb_utils.drawing import render_tracks_video, write_video
from molmo_nb_utils.grounding import Point
from molmo_nb_utils.paths import DATA_DIR

WIDTH, HEIGHT, FPS, SECONDS = 1280, 720, 30, 10
SAMPLE_FPS = 8


def make_clip(path: Path) -> Path:
    """A clip that is not trivially compressible: scrolling noise texture, moving waves and a ball."""
    rng = np.random.default_rng(0)
    texture = cv2.resize(
        rng.integers(0, 256, (HEIGHT // 8, WIDTH // 8, 3), dtype=np.uint8),
        (WIDTH, HEIGHT),
        interpolation=cv2.INTER_CUBIC,
    )
    xs = np.arange(WIDTH, dtype=np.float32)

    def frames():
        for i in range(FPS * SECONDS):
            frame = np.roll(texture, 4 * i, axis=1)
            frame[..., 0] = (128 + 100 * np.sin(xs / 60 + i / 10)).astype(np.uint8)
            cv2.circle(frame, (200 + 3 * i, HEIGHT // 2), 80, (255, 200, 0), -1)
            yield frame

    return write_video(frames(), path, FPS, preset="veryfast")


def make_tracks() -> list[Point]:
    """Three objects on circles; object 2 is occluded from 3 s to 5 s, object 3 appears at 2 s."""
    points = []
    for k in range(SECONDS * SAMPLE_FPS):
        t = k / SAMPLE_FPS
        for pid, (cx, cy, r, speed) in enumerate(
            [(320, 360, 150, 1.0), (640, 300, 200, -0.7), (960, 420, 120, 1.5)], 1
        ):
            if (pid == 2 and 3 <= t < 5) or (pid == 3 and t < 2):
                continue
            angle = speed * t
            points.append(Point(pid, cx + r * math.cos(angle), cy + r * math.sin(angle), time=t))
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed runs; the best is reported")
    parser.add_argument("--max-width", type=int, default=None, help="scale the output down to this width")
    args = parser.parse_args()

    clip = DATA_DIR / "bench" / f"clip_{WIDTH}x{HEIGHT}_{FPS}fps_{SECONDS}s.mp4"
    if not clip.exists():
        print(f"generating {clip} ...")
        make_clip(clip)
    out = DATA_DIR / "bench" / "rendered_tracks.mp4"
    points = make_tracks()

    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        render_tracks_video(clip, points, out, max_width=args.max_width, progress=False)
        times.append(time.perf_counter() - start)
    best = min(times)
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        frames, codec, size = stream.frames, stream.codec_context.name, f"{stream.width}x{stream.height}"
    print(f"CPU cores: {os.cpu_count()} (affinity {len(os.sched_getaffinity(0))})")
    print(
        f"input: {clip.name}; output: {out} ({codec}, {size}, {frames} frames, {out.stat().st_size / 1e6:.1f} MB)"
    )
    print(f"runs (s): {', '.join(f'{t:.2f}' for t in times)}")
    print(f"best: {best:.2f} s, {frames / best:.1f} frames/s, real-time factor {SECONDS / best:.2f}x")


if __name__ == "__main__":
    main()
