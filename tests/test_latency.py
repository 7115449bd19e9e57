"""A first word within a time budget: the latency model is measured once and remembered, the largest
number of image tokens that fits is read, and a budget out of reach is one clear error. The decisions are
checked against stored figures, never against the clock."""

import json
from dataclasses import asdict

import numpy as np
import pytest

from edgelmm.errors import UserError
from edgelmm.runtime.calibration import CalibrationStore
from edgelmm.runtime.latency import LatencyModel, _key_of, latency_for


@pytest.fixture(scope="module")
def bundle(checkpoint, tmp_path_factory):
    from edgelmm.export.bundle import export_bundle

    return export_bundle(checkpoint, tmp_path_factory.mktemp("bundles") / "scored", quant="f32")


@pytest.fixture
def model(bundle, tmp_path, monkeypatch):
    import edgelmm

    monkeypatch.setenv("EDGELMM_CACHE_DIR", str(tmp_path))
    return edgelmm.load(bundle, n_threads=1)


def test_prediction_is_a_line_and_the_budget_takes_the_most_tokens_that_fit():
    latency = LatencyModel(tokens=16, encode_s=0.1, image_fixed_s=0.05, per_token_s=0.01, question_s=0.05)
    assert latency.predict(10) == pytest.approx(0.3)
    assert latency.tokens_within(0.3) == 10 and latency.tokens_within(10.0) == 16
    assert latency.tokens_within(0.2) == 0 and latency.tokens_within(0.21) == 1


def test_the_latency_model_is_measured_once_and_remembered(model):
    latency = latency_for(model)
    assert latency.tokens == 16 and latency.encode_s > 0 and latency.question_s > 0 and latency.per_token_s >= 0
    stored = CalibrationStore().get(_key_of(model))
    assert stored == asdict(latency)
    edited = {**stored, "per_token_s": 1.0}
    CalibrationStore().put(_key_of(model), edited)
    assert latency_for(model).per_token_s == 1.0  # read back, not measured again


def test_answers_read_the_most_image_tokens_the_budget_allows(model):
    CalibrationStore().put(_key_of(model), asdict(LatencyModel(tokens=16, encode_s=0.1, image_fixed_s=0.05,
                                                               per_token_s=0.01, question_s=0.05)))
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    assert model.answer(image, "What is it?", max_tokens=2, ttft_budget=0.3).timings.image_tokens == 10
    assert model.answer(image, "What is it?", max_tokens=2, ttft_budget=60).timings.image_tokens == 16
    with pytest.raises(UserError, match=r"within 0.1 s is out of reach here: this machine needs about 0.21 s"):
        model.ask(image, "What is it?", ttft_budget=0.1)
    for bad in (0, -1, float("nan"), float("inf"), "1"):
        with pytest.raises(UserError, match="above 0"):
            model.ask(image, "What is it?", ttft_budget=bad)


def test_a_model_without_token_scores_says_a_budget_cannot_help(tmp_path, monkeypatch):
    import torch

    import edgelmm
    from edgelmm.export.bundle import write_bundle
    from edgelmm.modeling import build_model

    monkeypatch.setenv("EDGELMM_CACHE_DIR", str(tmp_path))
    torch.manual_seed(0)
    bundle = write_bundle(build_model("tiny", projector="ldpv2", projector_args={"pool": 2}), tmp_path / "b",
                          quant="f32")
    with pytest.raises(UserError, match="a time budget cannot shorten its answers"):
        edgelmm.load(bundle, n_threads=1).ask(np.zeros((32, 32, 3), dtype=np.uint8), "Hi", ttft_budget=1.0)


def test_cli_calibrate_shows_the_table_and_ask_takes_a_budget(bundle, tmp_path, capsys, monkeypatch):
    from test_runtime import run_cli

    monkeypatch.setenv("EDGELMM_CACHE_DIR", str(tmp_path))
    code, out, _ = run_cli(capsys, monkeypatch, "calibrate", "-m", bundle, "--threads", 1, "--show")
    assert code == 0 and "not measured yet" in out
    code, out, _ = run_cli(capsys, monkeypatch, "calibrate", "-m", bundle, "--threads", 1, "--json")
    record = json.loads(out)
    assert code == 0 and record["latency"]["tokens"] == 16 and record["settings"]["measured"]
    code, out, _ = run_cli(capsys, monkeypatch, "calibrate", "-m", bundle, "--threads", 1, "--show")
    assert code == 0 and "predicted time to first token" in out
    image = tmp_path / "photo.png"
    __import__("PIL.Image").Image.new("RGB", (40, 30), (200, 10, 10)).save(image)
    code, out, _ = run_cli(capsys, monkeypatch, "ask", image, "What?", "-m", bundle, "--threads", 1,
                           "--ttft-budget", 3600, "--json", "--max-tokens", 2)
    assert code == 0 and json.loads(out)["timings"]["image_tokens"] == 16
    code, _, err = run_cli(capsys, monkeypatch, "ask", image, "What?", "-m", bundle, "--ttft-budget", -2)
    assert code == 2 and "above 0" in err
