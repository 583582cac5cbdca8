"""make gpu-check: the measurements in notebooks/gpu_check.json, and the script that takes them."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from molmo_nb_utils.memory import estimate_memory, load_config

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(_spec)
sys.modules["gpu_check"] = gpu_check  # dataclasses look their module up there
_spec.loader.exec_module(gpu_check)
CHECKS = json.loads((REPO / "notebooks" / "gpu_check.json").read_text(encoding="utf-8"))
STALE = "stale planner figures: run .venv/bin/python scripts/gpu_check.py --estimates-only"


# --- the committed measurements ------------------------------------------------------------------------


def test_cpu_measurements_of_molmo2_4b_are_recorded_with_their_machine():
    cpu = CHECKS["cpu"]
    for key in ("device", "date", "torch", "transformers", "python", "measured"):
        assert cpu[key]
    settings = {row["setting"] for row in cpu["rows"]}
    assert settings == {s.name for s in gpu_check.CPU_SETTINGS}
    for row in cpu["rows"]:
        assert row["model"] == "allenai/Molmo2-4B" and row["precision"] == "bf16"
        # the bf16 weights alone are 9.0 GiB, so any real measurement is above them
        assert 9.0 < row["measured_gib"] < 12 and row["first_token_s"] > 0 and row["per_token_s"] > 0
        error = 100 * (row["estimated_gib"] / row["measured_gib"] - 1)
        assert row["error_pct"] == pytest.approx(error, abs=0.051)
        assert abs(row["error_pct"]) <= 15, f"{row['setting']}: the planner is off by {row['error_pct']}%"
    assert abs(cpu["weights"]["measured_gib"] - cpu["weights"]["estimated_gib"]) < 0.1
    chunked, whole = cpu["vision_chunking"]
    assert (whole["vision_chunk"], chunked["vision_chunk"]) == (None, gpu_check.VISION_CHUNK)
    assert whole["frames"] == chunked["frames"] >= 24
    assert chunked["measured_gib"] < whole["measured_gib"] / 2  # chunking more than halves the peak
    for row in (chunked, whole):  # and the planner knows by how much
        assert row["measured_gib"] == pytest.approx(row["estimated_vision_gib"], rel=0.15)


def test_no_gpu_figures_unless_a_gpu_run_wrote_them():
    if "cuda" not in CHECKS:
        return
    assert CHECKS["cuda"]["device"] and CHECKS["cuda"]["rows"]
    for row in CHECKS["cuda"]["rows"]:
        assert "error" in row or row["measured_gib"] > 0


def test_recorded_estimates_are_the_planners_current_ones():
    """Each row keeps its inputs, so the planner's figure can be recomputed: a changed planner shows here."""
    rows = CHECKS["lesson_estimates"] + CHECKS["cpu"]["rows"] + CHECKS.get("cuda", {}).get("rows", [])
    for row in (r for r in rows if "error" not in r):
        est = estimate_memory(
            load_config(row["model"]), precision=row["precision"], prompt_tokens=row["prompt_tokens"],
            new_tokens=row["new_tokens"], num_crops=row["crops"], num_frames=row["frames"],
            vision_chunk=row["vision_chunk"], kv_offload=row["kv_offload"],
        )  # fmt: skip
        assert row["estimated_total_gib"] == round(est.total_gb, 3), STALE
        assert row["estimated_gib"] == round(est.total_gb - est.overhead_gb, 3), STALE


def test_lesson_estimates_cover_every_setting_the_catalog_names():
    catalog = json.loads((REPO / "notebooks" / "catalog.json").read_text(encoding="utf-8"))
    have = {(r["model"], r["precision"], r["setting"]) for r in CHECKS["lesson_estimates"]}
    for entry in catalog["notebooks"]:
        spec = entry["memory"]
        for setting in spec["settings"]:
            assert (spec["model"], spec["precision"], setting) in have, entry["file"]
    names = {s.name for s in (*gpu_check.LESSONS, *gpu_check.GPU_EXTRAS)}
    assert {r["setting"] for r in CHECKS["lesson_estimates"]} == names
    by_setting = {r["setting"]: r for r in CHECKS["lesson_estimates"] if r["precision"] == "fp16"}
    # the processor's real geometry: a 1280x720 photo is 9 crops; 60 s at 2 fps is 121 frames
    assert by_setting["one image"]["crops"] == 9 and by_setting["two images"]["crops"] == 18
    assert by_setting["60 s video at 2 fps"]["frames"] == 121
    assert by_setting["120 s video at 2 fps, KV cache offloaded"]["frames"] == 241


# --- the script -------------------------------------------------------------------------------------------


def test_cpu_check_runs_end_to_end_on_the_tiny_model(tiny_model_path, tmp_path):
    """The whole CPU path (media, warm-up, random weights, chat, peaks, vision chunking), on the tiny shapes."""
    result = gpu_check.run_cpu(tmp_path, model_name=str(tiny_model_path), chunk_frames=3)
    assert [row["setting"] for row in result["rows"]] == [s.name for s in gpu_check.CPU_SETTINGS]
    image, video = result["rows"]
    assert image["crops"] == 5 and image["frames"] == 0 and image["prompt_tokens"] > 5 * 100  # 640x480
    assert video["frames"] == 8 and video["crops"] == 0 and video["new_tokens"] == gpu_check.CPU_NEW_TOKENS
    for row in result["rows"]:
        assert row["measured_gib"] >= 0 and row["first_token_s"] > 0 and row["per_token_s"] > 0
        assert row["peak_phase"] in ("the vision encoder", "prefill", "decoding")
    assert [r["vision_chunk"] for r in result["vision_chunking"]] == [gpu_check.VISION_CHUNK, None]
    assert result["device"].startswith("CPU: ") and result["date"]


def test_random_model_is_a_fresh_molmo2_in_the_dtype_asked(tiny_model_path):
    from transformers import AutoConfig, Molmo2ForConditionalGeneration

    config = AutoConfig.from_pretrained(tiny_model_path)
    model = gpu_check.random_model(config, torch.bfloat16, "cpu")
    fresh = Molmo2ForConditionalGeneration(config)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert all(torch.isfinite(p).all() for p in model.parameters())
    for name, param in model.named_parameters():
        if "norm" in name:
            assert torch.equal(param.float(), fresh.get_parameter(name).float()), name  # ones and zeros
        elif param.ndim == 2 and param.numel() > 100:
            assert 0.01 < param.float().std() < 0.03, name  # normal(0, 0.02), as a fresh model's
    for (name, buffer), (_, fresh_buffer) in zip(model.named_buffers(), fresh.named_buffers(), strict=True):
        assert buffer.dtype == torch.float32 and torch.equal(buffer, fresh_buffer), name  # RoPE tables
    assert model.generation_config.eos_token_id == config.eos_token_id


def test_token_times_split_the_first_token_from_the_rest():
    calls = []
    timer = gpu_check.TokenTimes(on_start=lambda: calls.append("start"))
    assert timer.first_token_s is None and timer.per_token_s is None
    for _ in range(4):  # as generate calls it: the prompt, then each new token
        timer.put(None)
    timer.end()
    assert calls == ["start"] and len(timer.times) == 4
    assert timer.first_token_s == timer.times[1] - timer.times[0]
    assert timer.per_token_s == pytest.approx((timer.times[3] - timer.times[1]) / 2)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux /proc only")
def test_peak_rss_is_reset_per_measurement():
    gpu_check.reset_peak_rss()
    before = gpu_check.rss_gib()
    block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
    assert gpu_check.rss_gib("VmHWM") - before > 60 / 1024
    del block
    gpu_check.reset_peak_rss()
    assert gpu_check.rss_gib("VmHWM") - before < 30 / 1024


def test_estimates_only_refreshes_figures_and_keeps_the_measurements(tmp_path):
    out = tmp_path / "checks.json"
    stale = dict(CHECKS["cpu"]["rows"][0], estimated_gib=1.0, estimated_total_gib=1.75, error_pct=-90.0)
    out.write_text(json.dumps({"cpu": {**CHECKS["cpu"], "rows": [stale]}}))
    assert gpu_check.main(["--estimates-only", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["cpu"]["rows"][0]["measured_gib"] == stale["measured_gib"]  # measurements are kept
    assert data["cpu"]["rows"][0]["estimated_gib"] == CHECKS["cpu"]["rows"][0]["estimated_gib"]
    assert data["lesson_estimates"] == CHECKS["lesson_estimates"] and "cuda" not in data
    # 8B in bf16 with a minute of video, all frames at once: 16 GiB of weights and 7 of vision encoder
    assert max(r["estimated_total_gib"] for r in data["lesson_estimates"]) > 20


def test_asking_for_a_gpu_without_one_is_a_clear_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--device", "cuda", "--out", str(tmp_path / "x.json")]) == 1
    assert "no CUDA GPU" in capsys.readouterr().err and not (tmp_path / "x.json").exists()
