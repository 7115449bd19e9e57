"""The photo-quality check on real photos made worse as blind users' photos are, and what the CLI and
the API do with its findings."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from edgelmm.bundle_format import load_manifest
from edgelmm.quality import check_photo, scores
from edgelmm.runtime.confidence import UNSURE_BELOW
from edgelmm.runtime.model import default_model
from test_runtime import run_cli

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _names(image) -> set[str]:
    return {f.name for f in check_photo(image)}


def _png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def photo():
    return Image.open(EXAMPLES / "es7_000002.png").convert("RGB").resize((448, 448), Image.Resampling.BICUBIC)


def test_clean_photos_have_no_findings():
    for path in sorted(EXAMPLES.glob("*.png")):
        assert _names(path) == set(), path.name


def test_blur_darkness_and_glare_are_found(photo):
    assert "blurred" in _names(photo.filter(ImageFilter.GaussianBlur(4)))
    a = np.asarray(photo, dtype=np.float32)
    streaked = sum(np.roll(a, k, axis=1) for k in range(-9, 10)) / 19  # 19 px of sideways motion
    assert "blurred" in _names(streaked.astype(np.uint8))
    assert "dark" in _names((a * 0.12).astype(np.uint8))
    assert "bright" in _names(np.clip(a * 3.5, 0, 255).astype(np.uint8))
    assert _names(_png(photo)) == set()  # bytes, as the server gets them


def test_an_object_cut_by_the_frame_is_found(scenes_dir):
    scenes = json.loads((scenes_dir / "scenes.json").read_text())["images"]
    found, tried, whole = 0, 0, 0
    for scene in scenes[:20]:
        x0, y0, x1, y1 = max((o["bbox"] for o in scene["objects"]), key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
        img = Image.open(scenes_dir / "images" / scene["image"]).convert("RGB")
        cx = (x0 + x1) / 2
        cut = img.crop((0, 0, int(cx), img.height) if cx > img.width / 2 else (int(cx), 0, img.width, img.height))
        tried += 1
        found += "cut_off" in _names(cut)
        whole += "cut_off" in _names(img)
    assert found / tried >= 0.8 and whole / tried <= 0.1


def test_scores_are_numbers_in_range(photo):
    s = scores(photo)
    assert 0 <= s["blur"] <= 1 and 0 <= s["mean"] <= 1 and 0 <= s["white"] <= 1 and 0 <= s["cut_off"] <= 1


def test_cli_hint_first_strict_quality_and_json(photo, tmp_path, capsys, monkeypatch):
    blurred = tmp_path / "blurred.png"
    photo.filter(ImageFilter.GaussianBlur(4)).save(blurred)
    code, out, _ = run_cli(capsys, monkeypatch, "ask", blurred, "How many circles are there?", "--threads", "1")
    assert code == 0 and out.splitlines()[0] == "The photo looks blurred; hold the phone still and try again."
    assert len(out.strip().splitlines()) == 2  # the hint, then the answer
    code, out, _ = run_cli(capsys, monkeypatch, "ask", blurred, "How many circles are there?", "--strict-quality")
    assert code == 3 and out.strip() == "The photo looks blurred; hold the phone still and try again."
    code, out, _ = run_cli(capsys, monkeypatch, "ask", blurred, "--json", "--threads", "1")
    report = json.loads(out)
    assert code == 0 and [f["name"] for f in report["photo"]] == ["blurred"] and report["answer"]
    code, out, _ = run_cli(capsys, monkeypatch, "ask", EXAMPLES / "es7_000002.png", "--strict-quality",
                           "--threads", "1")
    assert code == 0 and len(out.strip().splitlines()) == 1  # a good photo: the answer alone


def test_no_question_means_the_bundles_description_prompt():
    import edgelmm

    model = edgelmm.load(n_threads=1)
    assert model.describe_prompt == "Describe the image."
    image = EXAMPLES / "es7_000002.png"
    assert model.ask(image) == model.ask(image, "Describe the image.")
    model.close()


def test_confidence_and_the_unsure_sentence():
    import edgelmm
    from edgelmm.runtime.confidence import confidence, unsure_prefix

    assert confidence(0.8) == 0.8 and confidence(0.8, photo_findings=2) == 0.4 and confidence(None) is None
    assert unsure_prefix("There are two circles.") == "I am not sure, but there are two circles."
    assert unsure_prefix("I see a star.") == "I am not sure, but I see a star."  # not a plain word's capital
    model = edgelmm.load(n_threads=1)
    calibrated = load_manifest(default_model()).generation.unsure_below  # by benchmarks/confidence.py --write
    assert calibrated is not None and model.unsure_below == calibrated != UNSURE_BELOW
    answer = model.answer(EXAMPLES / "es7_000002.png", "How many circles are there?")
    assert calibrated < answer.timings.first_token_probability <= 1  # a clear image: a confident answer
    model.close()


def test_chat_begins_with_a_short_description_and_more_asks_for_details(capsys, monkeypatch):
    import edgelmm
    from edgelmm.runtime.confidence import unsure_prefix

    model = edgelmm.load(n_threads=1)
    image = EXAMPLES / "es7_000002.png"
    conversation = model.chat(image)
    expected = []
    for question in (model.describe_prompt, model.describe_more_prompt):
        text = conversation.ask(question)
        expected.append(unsure_prefix(text) if model.timings.first_token_probability < model.unsure_below else text)
    model.close()
    code, out, _ = run_cli(capsys, monkeypatch, "chat", image, "--describe", "--threads", "1", stdin="more\n\n")
    assert code == 0 and out.splitlines() == expected
