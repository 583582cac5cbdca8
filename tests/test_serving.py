"""Serving: real ``transformers serve`` processes on tiny models, on 127.0.0.1, asked through the ``openai`` client.

Two servers, each started once for this module on a free port, within a time limit, and always stopped: the plain
command line on a fine-tuned tiny Molmo2 whose adapter was merged and saved (lesson 09's model, which answers with
points, so points are compared in pixels), and the tiny base model with the video fix. Nothing leaves 127.0.0.1, and
no test asserts how long anything takes.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import urllib.request
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import redirect_stdout
from pathlib import Path

import openai
import pytest
from PIL import Image

from conftest import reader_make_env
from molmo_nb_utils import INPUT_DIR, load_image, load_model, sample_frames
from molmo_nb_utils.asking import Answer, chat, user_message
from molmo_nb_utils.dataset import load_dataset
from molmo_nb_utils.paths import REPO_ROOT
from molmo_nb_utils.serving import (
    ServerError,
    compare_server,
    free_port,
    save_merged,
    serve_settings,
    server_chat,
    start_server,
)
from molmo_nb_utils.serving.client import Reply
from molmo_nb_utils.serving.parity import _note
from molmo_nb_utils.training import fine_tune, load_adapter

PROMPT = "Point to the coins."
START_LIMIT_S = 300  # a hang guard for a server start, not an assertion on time


@pytest.fixture(scope="module")
def coin_photo():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        items = [i for i in load_dataset(INPUT_DIR / "coin_table.json") if i.points is not None]
    return items[1].path  # one coin, in the middle of the photo


@pytest.fixture(scope="module")
def tuned(tiny_model_path, coin_photo, tmp_path_factory):
    """(adapter model, processor, merged folder): the tiny model taught to point at a coin (lesson 09's code),
    and its adapter merged into a plain model folder."""
    root = tmp_path_factory.mktemp("tuned")
    model, processor = load_model(tiny_model_path)
    item = next(i for i in load_dataset(INPUT_DIR / "coin_table.json") if i.path == coin_photo)
    adapter = fine_tune(
        model,
        processor,
        [item],
        root / "run",
        prompt=PROMPT,
        max_steps=100,
        learning_rate=2e-3,
        progress=False,
    )
    merged = save_merged(
        load_adapter(load_model(tiny_model_path)[0], root / "run"), processor, root / "merged"
    )
    return adapter, processor, merged


@pytest.fixture(scope="module")
def server(tuned):
    with start_server(tuned[2], precision="float32", timeout=START_LIMIT_S, quiet=True) as running:
        yield running
    assert not running.running()


@pytest.fixture(scope="module")
def video_server(tiny_model_path):
    with start_server(
        tiny_model_path, precision="float32", video_fix=True, timeout=START_LIMIT_S, quiet=True
    ) as s:
        yield s


# ---------------------------------------------------------------------------------------------
# Parity


def test_the_merged_adapter_answers_as_the_adapter_in_process(server, tuned, coin_photo):
    adapter, processor, _ = tuned
    cases = {
        "pointing": [user_message(coin_photo, text=PROMPT)],
        "two images": [user_message(INPUT_DIR / "cat.jpg", coin_photo, text=PROMPT)],
        "text only": [user_message(text="What is a coin?")],
        "two turns": [
            user_message(coin_photo, text="What is this?"),
            {"role": "assistant", "content": "A table."},
            {"role": "user", "content": [{"type": "text", "text": PROMPT}]},
        ],
        "few crops": [user_message(load_image(coin_photo), text=PROMPT)],
    }
    table = compare_server(server.client(), adapter, processor, cases, max_new_tokens=40)
    print(table)
    assert table.all_same, str(table)
    pointing = table[0]
    assert pointing.points >= 1 and pointing.served.points() == pointing.local.points()
    assert pointing.served.images[0].size == load_image(coin_photo).size
    assert table[1].served.image_sizes == [
        load_image(INPUT_DIR / "cat.jpg").size,
        load_image(coin_photo).size,
    ]
    # the crops setting travels too: fewer crops, a shorter prompt, the same on both sides
    few = compare_server(server.client(), adapter, processor, {"one crop": cases["few crops"]}, max_crops=1)
    assert few.all_same and few[0].prompt_tokens[0] < pointing.prompt_tokens[0]


def test_a_video_is_shown_the_frames_the_package_picks(video_server, tiny_model):
    model, processor = tiny_model
    video = INPUT_DIR / "counting.mp4"
    seen8 = sample_frames(video, fps=8, max_frames=12)
    cases = {
        "video question": [user_message(video, text="How many coins?")],
        "tracking": [user_message(seen8, text="Track the coins.")],
        "image on the same server": [user_message(INPUT_DIR / "coins.jpg", text=PROMPT)],
    }
    table = compare_server(video_server.client(), model, processor, cases, max_new_tokens=24)
    assert table.all_same, str(table)
    served = table[0].served.video
    expected = sample_frames(video)
    assert served.indices == expected.indices and served.timestamps == expected.timestamps
    assert table[1].served.video.timestamps == seen8.timestamps


def test_the_plain_server_cannot_take_a_video_and_says_so(server):
    with pytest.raises(ServerError, match="audio track.*video_fix=True"):
        server_chat(server.client(), [user_message(INPUT_DIR / "counting.mp4", text="What happens?")])


def test_streaming_prints_the_answer_it_returns(server, tuned, coin_photo):
    adapter, processor, _ = tuned
    message = [user_message(coin_photo, text=PROMPT)]
    printed = io.StringIO()
    with redirect_stdout(printed):
        streamed = server_chat(server.client(), message, stream=True, max_new_tokens=40)
    assert streamed == server_chat(server.client(), message, max_new_tokens=40)
    assert streamed == chat(adapter, processor, message, max_new_tokens=40)
    assert printed.getvalue() == streamed.text + "\n"
    assert streamed.prompt_tokens > 0 and streamed.points()


def test_concurrent_requests_get_their_own_answers(server, coin_photo):
    client = server.client()
    questions = [
        [user_message(coin_photo, text=PROMPT)],
        [user_message(INPUT_DIR / "cat.jpg", text="What is this?")],
    ] * 2
    alone = [server_chat(client, q, max_new_tokens=16) for q in questions[:2]]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda q: server_chat(client, q, max_new_tokens=16), questions))
    assert together == alone * 2


# ---------------------------------------------------------------------------------------------
# Faults: each a clear error


def test_no_server_a_wrong_path_and_a_timeout(server, coin_photo):
    message = [user_message(coin_photo, text=PROMPT)]
    nobody = openai.OpenAI(base_url=f"http://127.0.0.1:{free_port()}/v1", api_key="none", max_retries=0)
    with pytest.raises(ServerError, match="No server answered at .*make serve"):
        server_chat(nobody, message, model="any")
    with pytest.raises(ServerError, match="No server answered"):
        server_chat(nobody, message)  # asking which model it serves fails the same way
    wrong_path = openai.OpenAI(base_url=server.base_url.removesuffix("/v1"), api_key="none", max_retries=0)
    with pytest.raises(ServerError, match="HTTP 404.*ends in /v1"):
        server_chat(wrong_path, message, model=server.model)
    impatient = server.client(timeout=0.001)
    with pytest.raises(ServerError, match="did not answer within 0.001 s.*longer timeout"):
        server_chat(impatient, message, model=server.model, max_new_tokens=200)


def test_a_model_the_server_does_not_have(server, coin_photo):
    with pytest.raises(ServerError, match=r"does not serve 'allenai/Molmo2-8B'; it serves '.*merged'"):
        server_chat(server.client(), [user_message(coin_photo, text=PROMPT)], model="allenai/Molmo2-8B")


def test_the_server_refusing_a_request(server, coin_photo):
    message = [user_message(coin_photo, text=PROMPT)]
    with pytest.raises(ServerError, match=r"refused the request \(HTTP 422\).*trust_remote_code"):
        server_chat(server.client(), message, trust_remote_code=True)
    with pytest.raises(ServerError, match=r"failed while answering \(HTTP 500.*server's log says which"):
        server_chat(server.client(), message, num_beams=0)
    with pytest.raises(TypeError, match="streamer cannot be sent to a server"):
        server_chat(server.client(), message, streamer=object())


def test_media_past_the_limits_is_refused_before_sending(tmp_path):
    """The same errors as load_image and sample_frames, raised here: the client has no server to send to."""
    nobody = openai.OpenAI(base_url=f"http://127.0.0.1:{free_port()}/v1", api_key="none", max_retries=0)
    huge = tmp_path / "huge.png"
    Image.new("1", (11_000, 11_000)).save(huge)  # 121 MP: past MAX_IMAGE_PIXELS, refused before decoding
    with pytest.raises(ValueError) as expected:
        load_image(huge)
    with pytest.raises(
        type(expected.value), match=str(expected.value)[:60].replace("(", r"\(").replace(")", r"\)")
    ):
        server_chat(nobody, [user_message(huge, text="What is this?")], model="any")
    missing = tmp_path / "missing.mp4"
    with pytest.raises(FileNotFoundError) as expected:
        sample_frames(missing)
    with pytest.raises(FileNotFoundError, match=str(missing)):
        server_chat(nobody, [user_message(missing, text="What happens?")], model="any")
    with pytest.raises(ValueError, match="alternate user, assistant"):
        server_chat(nobody, [{"role": "assistant", "content": "Hi"}], model="any")


# ---------------------------------------------------------------------------------------------
# Starting servers


def test_settings_are_checked_and_the_command_is_plain(tiny_model_path):
    settings = serve_settings(tiny_model_path, port=8123, precision="4bit", continuous_batching=True)
    assert settings.command == [
        "transformers", "serve", str(tiny_model_path), "--host", "127.0.0.1", "--port", "8123",
        "--dtype", "bfloat16", "--quantization", "bnb-4bit", "--continuous-batching",
    ]  # fmt: skip
    assert settings.base_url == "http://127.0.0.1:8123/v1"
    assert serve_settings(tiny_model_path).precision == "float32"  # auto, on a CPU: as load_model picks it
    assert "molmo2_video" in " ".join(serve_settings(tiny_model_path, video_fix=True).argv)
    with pytest.raises(ValueError, match="precision must be"):
        serve_settings(tiny_model_path, precision="int3")
    with pytest.raises(ValueError, match="port"):
        serve_settings(tiny_model_path, port=0)
    with pytest.raises(Exception, match="no config.json"):
        serve_settings(tiny_model_path.parent)


def test_a_taken_port_is_refused(server, tiny_model_path):
    with pytest.raises(ServerError, match=f"Port {server.settings.port} on 127.0.0.1 is taken"):
        start_server(tiny_model_path, port=server.settings.port, quiet=True)


def test_the_server_runs_this_pythons_transformers_with_or_without_its_script(
    tiny_model_path, tmp_path, monkeypatch
):
    """Beside a venv's Python lies the `transformers` script; an environment layered on another one (make's
    .venv-dev) has none, and the server must still be this Python's transformers, not one found on PATH."""
    settings = serve_settings(tiny_model_path, port=8123)
    bare = tmp_path / "bin" / "python"
    monkeypatch.setattr(sys, "executable", str(bare))
    assert settings.argv == [str(bare), "-m", "transformers.cli.transformers", *settings.command[1:]]
    bare.parent.mkdir()
    (bare.parent / "transformers").write_text("#!/bin/sh\n")
    assert settings.argv == [str(bare.parent / "transformers"), *settings.command[1:]]


def test_save_merged_needs_an_adapter_and_a_new_folder(tuned, tiny_model_path, tmp_path):
    model, processor = load_model(tiny_model_path)
    with pytest.raises(TypeError, match="LoRA adapter"):
        save_merged(model, processor, tmp_path / "out")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        save_merged(tuned[0], processor, tmp_path / "taken")
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"


def test_make_serve_prints_the_plain_line_and_serves(tiny_model_path):
    """What a reader types: `make serve` prints the transformers serve line and runs it until stopped."""
    port = free_port()
    venv = Path(sys.executable).parent.parent
    command = ["make", "-s", "-o", f"{venv}/.installed", "serve", f"VENV={venv}", f"PORT={port}",
               f"MOLMO_MODEL_ID={tiny_model_path}"]  # fmt: skip
    env = reader_make_env(PYTHONPATH=str(REPO_ROOT))
    make = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)  # fmt: skip
    try:
        first = make.stdout.readline()
        assert first.split() == [
            "transformers", "serve", str(tiny_model_path), "--host", "127.0.0.1", "--port", str(port),
            "--dtype", "float32",
        ]  # fmt: skip
        settings = serve_settings(tiny_model_path, port=port)
        for _ in range(START_LIMIT_S * 2):  # a hang guard: the server's /health, twice a second
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
                    assert reply.status == 200
                    break
            except OSError:
                assert make.poll() is None, make.stdout.read()
                time.sleep(0.5)
        client = openai.OpenAI(base_url=settings.base_url, api_key="none", max_retries=0)
        assert [m.id for m in client.models.list().data] == [str(tiny_model_path)]
    finally:
        os.killpg(make.pid, signal.SIGTERM)  # make, and the server it runs in the same session
        try:
            make.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait()


def test_each_difference_gets_its_explanation():
    """The notes of compare_server's rows, on answers written by hand: no server needed."""
    special = ["<|im_end|>", "<|endoftext|>"]

    def note(local: str, raw: str, tokens=(10, 10)) -> str:
        served = Answer(raw.strip(), prompt_tokens=tokens[1])
        return _note(
            Answer(local, prompt_tokens=tokens[0]), Reply(served, raw, tokens[1]), special, "float32"
        )

    assert note("A coin.", "A coin.") == ""
    assert "surrounding whitespace" in note("A coin.", " A coin.")
    assert "12-token prompt, 10 here" in note("A coin.", "Two coins.", tokens=(10, 12))
    assert "special tokens" in note("A coin.", "A<|im_end|> coin.")
    precision = note("A coin.", "A cat.")
    assert "character 3" in precision and "float32" in precision
