"""The demo model's held-out evaluation set is frozen: the questions, answers, scenes and pixels that
`edgelmm data synth --n-images 500 --seed 1` writes today. Its items come from the same random stream
as the training texts, so a change to the generator would otherwise change the test under the model
silently; a change that moves it must be a deliberate new evaluation set, not an accident."""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image

EVAL_SEED, EVAL_IMAGES = 1, 500
EVAL_JSON_SHA256 = "e265322b04471a68345a60da3e20a0465a7f06b67eea44f2900cb65344f8e0e4"
SCENES_JSON_SHA256 = "af88fb58c3303852fb1bceaebd65c225406386705a1504482554c7c81ed4fe5b"
PIXELS_SHA256 = "1dac979b44c5c70c48c98b25d8a081aa14e912fed905f2520ca9ab93a7b815d0"  # decoded RGB, file order


def test_the_demo_eval_set_is_what_it_was(tmp_path):
    from edgelmm.data.edgescenes import synthesize

    folder = synthesize(tmp_path / "eval", EVAL_IMAGES, seed=EVAL_SEED, workers=2, progress=False)
    assert hashlib.sha256((folder / "eval.json").read_bytes()).hexdigest() == EVAL_JSON_SHA256
    assert hashlib.sha256((folder / "scenes.json").read_bytes()).hexdigest() == SCENES_JSON_SHA256
    pixels = hashlib.sha256()
    for path in sorted((folder / "images").iterdir()):  # pixels, not PNG bytes: zlib versions differ
        pixels.update(np.asarray(Image.open(path).convert("RGB")).tobytes())
    assert pixels.hexdigest() == PIXELS_SHA256
