"""Benchmark: the frames Molmo2 is shown, ``sample_frames`` versus the article's OpenCV loop.

Why: ``chat`` decodes a video's frames with ``sample_frames`` (molmo_utils' sampling rule, on a
PyAV reader), and the drawings and scores use those same frames. Fetching them should not be
slower than the usual recipe, an OpenCV seek per frame:

    cap.set(cv2.CAP_PROP_POS_FRAMES, idx); ok, frame = cap.read()

The test video is made here once (``downloaded_data/bench/``): 60 s, 1280x720, 30 fps H.264 with
a keyframe every 250 frames, a panning texture so that decoding costs what real footage costs,
and each frame's own index written in it as an 11-bit stripe code (and as a number, for people).
Every approach fetches the frames ``chat(..., max_frames=N)`` shows the model (``--frames N``,
spread over the whole minute); reading the code back from each returned frame and comparing it
with the frame index asked for gives each approach's error in frames.

    python scripts/benchmark_frames.py [--frames 16] [--repeats 3]

This is a script, not a test: timings depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import time
from collections.abc import Callable
from pathlib import Path

import av
import cv2
import numpy as np

from molmo_nb_utils import media, paths
from molmo_nb_utils.media import reader

WIDTH, HEIGHT, FPS, SECONDS, GOP = 1280, 720, 30, 60, 250
BITS = 11  # 2**11 = 2048 > 1800 frames
BAND = HEIGHT // 4  # the stripe code fills the top quarter
STRIPE = WIDTH // BITS


def make_video(path: Path) -> Path:
    """Write the benchmark video once (temporary name, then rename); reuse it afterwards."""
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    num_frames = FPS * SECONDS
    # Smooth random texture, wide enough to pan 2 px per frame: real motion for the encoder.
    coarse = rng.integers(0, 256, (HEIGHT // 8, (WIDTH + 2 * num_frames) // 8 + 1), dtype=np.uint8)
    texture = cv2.resize(coarse, (coarse.shape[1] * 8, coarse.shape[0] * 8), interpolation=cv2.INTER_CUBIC)
    with paths.atomic_path(path) as tmp:
        with av.open(str(tmp), "w") as container:
            stream = container.add_stream("libx264", rate=FPS)
            stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
            stream.gop_size = GOP
            stream.options = {
                "preset": "veryfast",
                "crf": "23",
                "x264-params": f"keyint={GOP}:min-keyint={GOP}:scenecut=0",
            }
            for i in range(num_frames):
                gray = texture[:HEIGHT, 2 * i : 2 * i + WIDTH].copy()
                gray[:BAND] = 0
                for bit in range(BITS):
                    if (i >> bit) & 1:
                        gray[:BAND, bit * STRIPE : (bit + 1) * STRIPE] = 255
                cv2.putText(gray, str(i), (40, HEIGHT - 60), cv2.FONT_HERSHEY_SIMPLEX, 6, 255, 16)
                frame = av.VideoFrame.from_ndarray(np.repeat(gray[..., None], 3, axis=2), format="rgb24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode())
    return path


def read_index(frame: np.ndarray) -> int:
    """The frame index written in the stripe code (centre of each stripe, away from edges)."""
    band = frame[20 : BAND - 20, :, 1].astype(np.float64)
    return sum(1 << b for b in range(BITS) if band[:, b * STRIPE + 15 : (b + 1) * STRIPE - 15].mean() > 127)


def article_opencv(path: Path, indices: list[int]) -> tuple[list[np.ndarray], list[int]]:
    """The article's recipe: one seek and one read per wanted frame."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    for idx in indices:
        cap.set(cv2.CAP_PROP_POS_FRAMES, idx)
        ok, frame = cap.read()
        if not ok:
            raise RuntimeError(f"OpenCV could not read frame {idx}")
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    return frames, indices


def decord_batch(path: Path, indices: list[int]) -> tuple[list[np.ndarray], list[int]]:
    """One decord reader, one get_batch call (molmo_utils' reader when decord is installed)."""
    import decord

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    return list(reader.get_batch(indices).asnumpy()), indices


def ours(path: Path, max_frames: int) -> tuple[list[np.ndarray], list[int]]:
    reader._index_of.cache_clear()  # time a first call, not a cached one
    seen = media.sample_frames(path, max_frames)
    return list(seen.frames), seen.indices


def measure(approaches: dict[str, Callable], repeats: int) -> dict[str, tuple[float, float, tuple]]:
    """Best wall time and CPU time (all threads) per approach; runs interleaved, so load that
    comes and goes from other programs falls on every approach alike."""
    best: dict[str, tuple[float, float, tuple]] = {}
    for _ in range(repeats):
        for name, fn in approaches.items():
            wall, cpu = time.perf_counter(), time.process_time()
            result = fn()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if name not in best or wall < best[name][0]:
                best[name] = (wall, min(cpu, best.get(name, (0, cpu))[1]), result)
    return best


def max_error(frames: list[np.ndarray], indices: list[int]) -> int:
    return max(abs(read_index(f) - i) for f, i in zip(frames, indices, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=16, help="frame budget, max_frames (default 16)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per approach; best is kept")
    args = parser.parse_args()

    path = make_video(paths.DATA_DIR / "bench" / f"index_{SECONDS}s_{HEIGHT}p{FPS}_gop{GOP}.mp4")
    info = media.video_info(path)
    indices = media.sample_frames(path, args.frames).indices  # the frames the model is shown
    print(
        f"{path.name}: {info.num_frames} frames, {info.fps:g} fps, {info.width}x{info.height}, keyframe every {GOP}"
    )
    print(
        f"{len(indices)} frames (max_frames={args.frames}), best of {args.repeats}; "
        f"{reader.cpu_count()} CPU cores ({platform.machine()})"
    )

    approaches = {
        "sample_frames (what chat uses)": lambda: ours(path, args.frames),
        "OpenCV seek loop (article)": lambda: article_opencv(path, indices),
    }
    if importlib.util.find_spec("decord") is not None:
        approaches["decord get_batch"] = lambda: decord_batch(path, indices)
    results = measure(approaches, args.repeats)
    article = results["OpenCV seek loop (article)"][0]
    print(f"\n{'approach':32s} {'best s':>7s} {'CPU s':>6s} {'vs article':>11s} {'max error (frames)':>19s}")
    for name, (wall, cpu, (frames, got)) in results.items():
        print(f"{name:32s} {wall:7.3f} {cpu:6.2f} {article / wall:10.2f}x {max_error(frames, got):19d}")


if __name__ == "__main__":
    main()
