"""Is this photo good enough to answer about? A check made before answering, with no model: NumPy on
the image at 448 pixels on its long side.

Findings, each with a score and the threshold it passed:
- `blurred`: how spread out the strongest edges are (0: each rises within a pixel; near 1: over eight
  or more), in the blurrier of the two directions, since motion blur spreads edges along one only.
- `dark` / `bright`: the mean brightness, and the share of pixels crushed to black or burnt to white.
- `low_contrast`: the spread of brightness.
- `cut_off`: something cut by the edge of the frame: a stretch of one edge, framed by two sharp
  changes of colour, whose colour differs from the rest of that edge.
The thresholds come from `benchmarks/photo_quality.py` (blur, darkness, brightness and cropping applied
to EdgeScenes photos; recall and false alarms are in benchmarks/results/photo_quality.md). A
finding is a hint for the user ("hold the phone still"), not a verdict: the answer still comes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from edgelmm.imaging import open_image

ANALYSIS_SIZE = 448
EDGE_WINDOW = 8  # pixels over which an edge's rise is measured
# Calibrated by benchmarks/photo_quality.py (see the module docstring).
THRESHOLDS = {"blurred": 0.76, "dark": 0.2776, "bright": 0.7841, "low_contrast": 0.035, "cut_off": 0.0835}
HINTS = {
    "blurred": "The photo looks blurred; hold the phone still and try again.",
    "dark": "The photo is very dark; turn on a light or move towards one.",
    "bright": "The photo is washed out by light; turn away from the light source.",
    "low_contrast": "The photo shows little contrast; move closer or change the angle.",
    "cut_off": "Something seems cut off at the edge of the photo; move the phone back a little.",
}


@dataclass(frozen=True)
class Finding:
    name: str
    score: float
    threshold: float
    hint: str

    def to_dict(self) -> dict:
        return asdict(self)


def _gray(image) -> tuple[np.ndarray, np.ndarray]:
    """(RGB float array, luminance) in 0..1 at ANALYSIS_SIZE on the long side."""
    from PIL import Image

    img = open_image(image)
    scale = ANALYSIS_SIZE / max(img.size)
    if scale != 1:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                         Image.Resampling.BILINEAR)
    rgb = np.asarray(img, dtype=np.float32) / 255
    return rgb, rgb @ np.array([0.299, 0.587, 0.114], np.float32)


def blur_score(g: np.ndarray, window: int = EDGE_WINDOW) -> float:
    """How spread out the photo's strongest edges are, in the blurriest direction: 0 when each rises
    within one pixel, near 1 when it rises over the whole window. For each strong change of brightness
    across `window` pixels, the steepest one-pixel step inside it is compared with the whole change."""
    from numpy.lib.stride_tricks import sliding_window_view

    worst = 0.0
    for axis in (0, 1):
        if g.shape[axis] <= window:
            continue
        step = np.abs(np.diff(g, axis=axis))
        change = np.abs(np.take(g, range(window, g.shape[axis]), axis=axis)
                        - np.take(g, range(0, g.shape[axis] - window), axis=axis))
        steepest = sliding_window_view(step, window, axis=axis).max(axis=-1)
        strong = change > max(0.08, float(np.percentile(change, 98)))
        if strong.sum() < 20:  # too few edges across this direction to judge
            continue
        worst = max(worst, 1 - float(np.median(steepest[strong] / change[strong])))
    return worst


def cut_off_score(rgb: np.ndarray) -> float:
    """The longest stretch of an edge, between two sharp changes of colour, whose colour stands apart
    from the rest of that edge, as a share of the edge's length."""
    best = 0.0
    for edge in (rgb[1], rgb[-2], rgb[:, 1], rgb[:, -2]):
        n = len(edge)
        if n < 8:
            continue
        step = np.linalg.norm(edge[2:] - edge[:-2], axis=1)  # change of colour along the edge
        cuts = np.flatnonzero(step > 0.25) + 1
        if len(cuts) < 2:
            continue
        # Runs between consecutive cuts, merged where cuts lie next to each other.
        for a, b in zip(cuts[:-1], cuts[1:]):
            if b - a < max(3, n // 50):
                continue
            inside = np.median(edge[a:b], axis=0)
            outside = np.median(np.concatenate([edge[:max(1, a - 2)], edge[min(n - 1, b + 2):]]), axis=0)
            if np.linalg.norm(inside - outside) > 0.25:
                best = max(best, (b - a) / n)
    return best


def scores(image) -> dict[str, float]:
    """Every measure of `image` (a path, bytes, PIL image or HxWx3 array)."""
    rgb, g = _gray(image)
    return {"blur": blur_score(g), "mean": float(g.mean()), "white": float((g > 0.97).mean()),
            "contrast": float(g.std()), "cut_off": cut_off_score(rgb)}


def findings_from(s: dict[str, float], thresholds: dict[str, float] = THRESHOLDS) -> list[Finding]:
    """The findings that measures `s` (from `scores`) make under `thresholds`."""
    t = thresholds
    exposed = s["mean"] > t["dark"] and s["white"] < t["bright"]
    checks = [("blurred", s["blur"], s["blur"] >= t["blurred"]),
              ("dark", s["mean"], s["mean"] <= t["dark"]),
              ("bright", s["white"], s["white"] >= t["bright"]),
              ("low_contrast", s["contrast"], exposed and s["contrast"] <= t["low_contrast"]),
              ("cut_off", s["cut_off"], s["cut_off"] >= t["cut_off"])]
    return [Finding(name, round(score, 4), t[name], HINTS[name]) for name, score, found in checks if found]


def check_photo(image) -> list[Finding]:
    """The findings about `image` (empty for a good photo)."""
    return findings_from(scores(image))
