import io

import numpy as np
import pytest
from PIL import Image

from edgelmm.errors import UserError
from edgelmm.imaging import ImageSpec, open_image, preprocess

CLIP = ImageSpec(size=32, resize="shortest_edge_crop", mean=(0.48145466, 0.4578275, 0.40821073),
                 std=(0.26862954, 0.26130258, 0.27577711))
SIGLIP = ImageSpec(size=32, resize="squash")


def photo(w=57, h=41, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("size", [(57, 41), (41, 57), (32, 32), (200, 90)])
def test_clip_preprocessing_equals_transformers_image_processor(size):
    from transformers import CLIPImageProcessor

    img = photo(*size)
    reference = CLIPImageProcessor(**{k: v for k, v in CLIP.to_hf().items() if k != "image_processor_type"})
    expected = reference(img, return_tensors="np")["pixel_values"][0]
    assert np.abs(preprocess(img, CLIP) - expected).max() < 1e-5


def test_siglip_preprocessing_equals_transformers_image_processor():
    from transformers import SiglipImageProcessor

    img = photo(70, 45)
    reference = SiglipImageProcessor(**{k: v for k, v in SIGLIP.to_hf().items() if k != "image_processor_type"})
    expected = reference(img, return_tensors="np")["pixel_values"][0]
    assert np.abs(preprocess(img, SIGLIP) - expected).max() < 1e-5


def test_spec_round_trips_through_dict_and_hf_config():
    for spec in (CLIP, SIGLIP):
        assert ImageSpec.from_dict(spec.to_dict()) == spec
        assert ImageSpec.from_hf(spec.to_hf()) == spec


def test_inputs_of_every_kind_give_the_same_pixels(tmp_path):
    img = photo()
    path = tmp_path / "p.png"
    img.save(path)
    expected = preprocess(img, CLIP)
    for source in (path, str(path), path.read_bytes(), np.asarray(img)):
        assert np.array_equal(preprocess(source, CLIP), expected)


def test_exif_rotation_is_applied():
    img = photo(40, 20)
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    img.save(buf, format="JPEG", exif=exif)
    assert open_image(buf.getvalue()).size == (20, 40)


def test_transparency_becomes_white_and_grayscale_becomes_rgb():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert open_image(rgba).getpixel((0, 0)) == (255, 255, 255)
    assert open_image(Image.new("L", (4, 4), 7)).getpixel((1, 1)) == (7, 7, 7)


def test_bad_images_are_user_errors(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(UserError, match="cannot read"):
        open_image(tmp_path / "bad.png")
    with pytest.raises(UserError, match="not found"):
        open_image(tmp_path / "missing.png")
    with pytest.raises(UserError, match="HxWx3 uint8"):
        open_image(np.zeros((4, 4), np.uint8))
