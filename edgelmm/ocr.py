"""Reading the text in a photo, offline (`edgelmm read`, `ask --ocr`).

RapidOCR on ONNX Runtime (rapidocr-onnxruntime 1.4.x, whose wheel carries its detection and
recognition models: nothing is downloaded): `pip install 'edgelmm[ocr]'`. Lines come in reading order
(top to bottom, rows left to right). Its English recognizer often drops the spaces between words
("Platform4trainstoBerlin"); edgelmm puts them back where the photo itself shows a gap clearly wider
than the gaps between letters (never inside a number).

For `ask --ocr`, the words go into the question as LLaVA-1.5 gives them for TextVQA ("Reference OCR
token: ..."), as the user's own text: never as control tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from edgelmm.errors import UserError
from edgelmm.imaging import open_image

MIN_SCORE = 0.5  # recognizer confidence below which a line is dropped
INSTALL = "pip install 'edgelmm[ocr]' (rapidocr-onnxruntime 1.4, Python below 3.13)"


@dataclass(frozen=True)
class Line:
    text: str
    box: tuple[float, float, float, float]  # left, top, right, bottom in the photo's pixels
    score: float

    def to_dict(self) -> dict:
        return {"text": self.text, "box": list(self.box), "score": round(self.score, 4)}


@lru_cache(maxsize=1)
def _engine():
    try:
        from rapidocr_onnxruntime import RapidOCR
    except ImportError:
        raise UserError(f"reading text needs the OCR extra: {INSTALL}") from None
    return RapidOCR()


def read_text(image) -> list[Line]:
    """The lines of text in `image` (a path, bytes, PIL image or HxWx3 array), in reading order."""
    rgb = np.asarray(open_image(image))
    found, _ = _engine()(rgb, return_word_box=True)
    gray = rgb @ np.array([0.299, 0.587, 0.114])
    lines = []
    for item in found or []:
        corners, text, score = item[0], item[1], float(item[2])
        if score < MIN_SCORE or not text.strip():
            continue
        xs, ys = [p[0] for p in corners], [p[1] for p in corners]
        box = (float(min(xs)), float(min(ys)), float(max(xs)), float(max(ys)))
        chars = item[3] if len(item) > 3 else None
        lines.append(Line(_spaced(text, chars, box, gray), box, score))
    return _reading_order(lines)


def _reading_order(lines: list[Line]) -> list[Line]:
    """Rows (lines that overlap vertically by half their height) top to bottom, each left to right."""
    rows: list[list[Line]] = []
    for line in sorted(lines, key=lambda l: l.box[1]):
        top, bottom = line.box[1], line.box[3]
        for row in rows:
            r_top, r_bottom = min(l.box[1] for l in row), max(l.box[3] for l in row)
            if min(bottom, r_bottom) - max(top, r_top) > 0.5 * min(bottom - top, r_bottom - r_top):
                row.append(line)
                break
        else:
            rows.append([line])
    return [line for row in rows for line in sorted(row, key=lambda l: l.box[0])]


def _word_gaps(gray: np.ndarray, box) -> list[float]:
    """Centres (x) of the gaps between words in a line's box: runs of columns without ink in the wider
    of two groups of widths, and at least a fifth of the line's height."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    crop = gray[max(0, y0):y1 + 1, max(0, x0):x1 + 1]
    if crop.size == 0:
        return []
    spread = float(np.percentile(crop, 95) - np.percentile(crop, 5))
    ink = np.abs(crop - np.median(crop)) > 0.35 * max(spread, 1.0)
    empty = ~ink.any(axis=0)
    runs, start = [], None
    for x, e in enumerate([*empty, False]):
        if e and start is None:
            start = x
        elif not e and start is not None:
            if start > 0 and x < len(empty):  # not the margins
                runs.append((x - start, max(0, x0) + (start + x) / 2))
            start = None
    if not runs:
        return []
    cut = max(_otsu([w for w, _ in runs]), 0.2 * crop.shape[0])  # letters sit closer than a fifth of a line
    return [centre for w, centre in runs if w >= cut]


def _otsu(widths: list[int]) -> float:
    """The width that best splits gap widths into two groups (letter gaps, word gaps)."""
    values = np.sort(np.asarray(widths, dtype=np.float64))
    best, cut = -1.0, float(values[-1]) + 1
    for k in range(1, len(values)):
        if values[k] == values[k - 1]:
            continue
        a, b = values[:k], values[k:]
        spread = len(a) * len(b) * (a.mean() - b.mean()) ** 2
        if spread > best:
            best, cut = spread, float(values[k])
    return cut


def _spaced(text: str, chars, box, gray: np.ndarray) -> str:
    """`text` with spaces put back where the recognizer dropped them."""
    if len(text) < 4 or not chars or len(chars) != len(text):
        return text
    gaps = _word_gaps(gray, box)
    centres = [float(np.mean([p[0] for p in c])) for c in chars]
    out = text[0]
    for i in range(1, len(text)):
        # Not inside a number: digits like "1" stand wide in many fonts, and "Room 1 2" reads worse.
        if " " not in text[i - 1:i + 1] and any(centres[i - 1] < g < centres[i] for g in gaps) \
                and not (text[i - 1].isdigit() and text[i].isdigit()):
            out += " "
        out += text[i]
    return out


def reference_tokens(lines: list[Line]) -> str:
    """The words for a question, as LLaVA-1.5 writes OCR tokens for TextVQA ("" when there are none)."""
    words = [w for line in lines for w in line.text.split()]
    return "Reference OCR token: " + ", ".join(words) if words else ""
