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


def linear(**fields) -> LatencyModel:
    """0.05 s of fixed image prefill and 0.01 s per token, measured at 1, 2 and 4 tokens."""
    return LatencyModel(tokens=16, encode_s=0.1, prefill_tokens=[1, 2, 4], prefill_s=[0.06, 0.07, 0.09],
                        question_s=0.05, **fields)


def test_prediction_follows_the_measured_points_and_the_budget_takes_the_most_tokens_that_fit():
    latency = linear()
    assert latency.predict(10) == pytest.approx(0.3)  # past the last point: along the last segment
    assert latency.tokens_within(0.3) == 10 and latency.tokens_within(10.0) == 16
    assert latency.tokens_within(0.2) == 0 and latency.tokens_within(0.21) == 1
    # between points the prediction is interpolated, so a dear first token is not spread over the rest
    steep = LatencyModel(tokens=16, encode_s=0.0, prefill_tokens=[1, 8], prefill_s=[0.5, 0.57], question_s=0.0)
    assert steep.predict(1) == pytest.approx(0.5) and steep.predict(4) == pytest.approx(0.53)
    assert steep.tokens_within(0.55) == 6 and steep.tokens_within(0.49) == 0


@pytest.mark.parametrize("points", [dict(prefill_tokens=[], prefill_s=[]), dict(prefill_tokens=[4, 2]),
                                    dict(prefill_s=[0.1, float("nan"), 0.2]), dict(prefill_tokens="124")])
def test_malformed_points_are_refused(points):
    with pytest.raises(ValueError, match="malformed"):
        LatencyModel(**{**asdict(linear()), **points})


def test_the_latency_model_is_measured_once_and_remembered(model):
    latency = latency_for(model)
    assert latency.tokens == 16 and latency.encode_s > 0 and latency.question_s > 0
    assert latency.prefill_tokens == [1, 2, 4] and all(t > 0 for t in latency.prefill_s)
    stored = CalibrationStore().get(_key_of(model))
    assert stored == asdict(latency)
    edited = {**stored, "encode_s": 1.0}
    CalibrationStore().put(_key_of(model), edited)
    assert latency_for(model).encode_s == 1.0  # read back, not measured again
    for stale in ({"tokens": 16, "per_token_s": 0.01}, {**stored, "prefill_s": [0.1]}):  # older, damaged
        CalibrationStore().put(_key_of(model), stale)
        assert latency_for(model).prefill_tokens == [1, 2, 4]  # measured again


def test_answers_read_the_most_image_tokens_the_budget_allows(model):
    CalibrationStore().put(_key_of(model), asdict(linear()))
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
