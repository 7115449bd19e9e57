"""Drawing a scene into an RGB image (Pillow).

Objects are drawn at 4x resolution and box-filtered down, which anti-aliases their edges; the
background is upsampled by pixel repetition, so box filtering gives it back unchanged.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from edgelmm.data.edgescenes.world import BACKGROUND_RANGE, CANVAS, Scene

SUPERSAMPLE = 4


def render_background(background: dict) -> np.ndarray:
    """(CANVAS, CANVAS, 3) uint8 with every channel inside BACKGROUND_RANGE."""
    colors = np.asarray(background["colors"], np.float32)
    kind = background["kind"]
    if kind == "solid":
        img = np.broadcast_to(colors[0], (CANVAS, CANVAS, 3)).astype(np.float32)
    elif kind == "gradient":
        t = np.linspace(0.0, 1.0, CANVAS, dtype=np.float32)
        ramp = {"horizontal": t[None, :], "vertical": t[:, None],
                "diagonal": (t[None, :] + t[:, None]) / 2}[background["direction"]]
        ramp = np.broadcast_to(ramp, (CANVAS, CANVAS))[..., None]
        img = colors[0] * (1 - ramp) + colors[1] * ramp
    elif kind == "noise":
        rng = np.random.default_rng(background["noise_seed"])
        img = colors[0] + rng.normal(0.0, background["noise_std"], (CANVAS, CANVAS, 3))
    else:
        raise ValueError(f"unknown background kind {kind!r}")
    return np.clip(np.rint(img), *BACKGROUND_RANGE).astype(np.uint8)


def render_scene(scene: Scene) -> Image.Image:
    s = SUPERSAMPLE
    big = Image.fromarray(render_background(scene.background)).resize((CANVAS * s, CANVAS * s), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(big)
    for obj in scene.objects:
        outline = obj.outline()
        if outline is None:
            x0, y0, x1, y1 = obj.bbox
            draw.ellipse([x0 * s, y0 * s, x1 * s - 1, y1 * s - 1], fill=obj.rgb)
        else:
            draw.polygon([(x * s, y * s) for x, y in outline], fill=obj.rgb)
    return big.resize((CANVAS, CANVAS), Image.Resampling.BOX)
