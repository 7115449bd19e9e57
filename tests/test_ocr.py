"""Reading text: RapidOCR (the `ocr` extra, which the dev extra installs) on rendered text of known
content, in reading order with words apart, through `edgelmm read` and `ask --ocr`."""

from __future__ import annotations

import json
import sys

import pytest
from PIL import Image, ImageDraw, ImageFont

from test_runtime import run_cli

pytest.importorskip("rapidocr_onnxruntime", reason="the ocr extra (rapidocr-onnxruntime, Python < 3.13)")


@pytest.fixture(scope="module")
def sign(tmp_path_factory):
    """Two lines side by side above a sentence, in Pillow's own font (no system font needed)."""
    img = Image.new("RGB", (700, 220), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=28)
    draw.text((20, 20), "EXIT", fill="black", font=font)
    draw.text((360, 20), "Room 12", fill="black", font=font)
    draw.text((20, 110), "Please keep the door closed", fill="black", font=font)
    path = tmp_path_factory.mktemp("ocr") / "sign.png"
    img.save(path)
    return path


def test_read_gives_lines_in_reading_order_with_words_apart(sign, capsys, monkeypatch):
    code, out, err = run_cli(capsys, monkeypatch, "read", sign)
    lines = out.splitlines()  # OCR may misread a letter ("Ro0m"): order and word breaks are what is checked
    assert code == 0 and len(lines) == 3 and err == ""
    assert lines[0] == "EXIT" and lines[1].endswith(" 12") and lines[2] == "Please keep the door closed"
    code, out, _ = run_cli(capsys, monkeypatch, "read", sign, "--json")
    lines = json.loads(out)["lines"]
    assert [line["text"] for line in lines][0] == "EXIT" and all(0.5 <= line["score"] <= 1 for line in lines)
    assert lines[0]["box"][0] < lines[1]["box"][0] and lines[1]["box"][3] < lines[2]["box"][1]


def test_ask_ocr_puts_the_words_into_the_question_as_plain_text(sign, capsys, monkeypatch):
    from edgelmm.ocr import read_text, reference_tokens

    reference = reference_tokens(read_text(sign))
    assert reference.startswith("Reference OCR token: EXIT, ") and reference.endswith(", Please, keep, the, door, closed")
    code, out, _ = run_cli(capsys, monkeypatch, "ask", sign, "What does the sign say?", "--json", "--threads", "1")
    plain = json.loads(out)["timings"]["prompt_tokens"]
    code, out, _ = run_cli(capsys, monkeypatch, "ask", sign, "What does the sign say?", "--ocr", "--json",
                           "--threads", "1")
    assert code == 0 and json.loads(out)["timings"]["prompt_tokens"] > plain + 8


def test_a_photo_without_text_and_a_missing_extra(tmp_path, capsys, monkeypatch):
    from edgelmm import ocr

    blank = tmp_path / "blank.png"
    Image.new("RGB", (300, 200), (200, 220, 240)).save(blank)
    assert run_cli(capsys, monkeypatch, "read", blank)[1].strip() == "No text found."
    monkeypatch.setitem(sys.modules, "rapidocr_onnxruntime", None)
    ocr._engine.cache_clear()
    code, out, err = run_cli(capsys, monkeypatch, "read", blank)
    assert code == 2 and out == "" and "pip install 'edgelmm[ocr]'" in err
    ocr._engine.cache_clear()
