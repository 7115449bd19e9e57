import io
import os
import struct
import sys
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image, ImageFile

from edgelmm import imaging
from edgelmm.errors import UserError
from edgelmm.imaging import ImageSpec, open_image, preprocess

CLIP = ImageSpec(size=32, resize="shortest_edge_crop", mean=(0.48145466, 0.4578275, 0.40821073),
                 std=(0.26862954, 0.26130258, 0.27577711))
SIGLIP = ImageSpec(size=32, resize="squash")
LETTERBOX = ImageSpec(size=32, resize="letterbox", mean=CLIP.mean, std=CLIP.std)


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


# --- Formats, modes and bad input: what the runtime promises for photos from users ---------------------


def smooth_photo(w=64, h=48):
    """Gradients and a disc: compresses like a photo, so lossy formats stay close to the original."""
    y, x = np.mgrid[0:h, 0:w]
    disc = ((x - w / 2) ** 2 + (y - h / 2) ** 2 < (h / 4) ** 2) * 80
    rgb = np.stack([x * 200 / w + 30, y * 200 / h + 20, 150 - disc + x * 50 / w], axis=-1)
    return Image.fromarray(rgb.clip(0, 255).astype(np.uint8))


def user_error(source, match):
    """The one-line UserError that `open_image(source)` raises; a path source must be named in it."""
    with pytest.raises(UserError, match=match) as e:
        open_image(source)
    message = str(e.value)
    assert "\n" not in message
    if not isinstance(source, bytes):
        assert str(source) in message


@pytest.mark.parametrize("fmt, kwargs, tolerance", [
    ("PNG", {}, 0), ("BMP", {}, 0), ("TIFF", {}, 0), ("WEBP", {"lossless": True}, 0),
    ("JPEG", {"quality": 90}, 0.03), ("WEBP", {"quality": 90}, 0.03), ("GIF", {}, 0.03),
])
def test_every_format_round_trips(tmp_path, fmt, kwargs, tolerance):
    img = smooth_photo()
    path = tmp_path / f"photo.{fmt.lower()}"
    img.save(path, format=fmt, **kwargs)
    # Mean absolute difference in normalized units (std 0.5: 0.03 is about 4 of 255 levels).
    assert np.abs(preprocess(path, SIGLIP) - preprocess(img, SIGLIP)).mean() <= tolerance


def test_cmyk_jpeg_becomes_rgb():
    img = smooth_photo()
    buf = io.BytesIO()
    img.convert("CMYK").save(buf, format="JPEG", quality=95)
    decoded = open_image(buf.getvalue())
    assert decoded.mode == "RGB"
    assert np.abs(np.asarray(decoded, np.int16) - np.asarray(img, np.int16)).mean() < 4


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path, fmt):
    levels = np.array([[0, 257 * 100, 65535]], np.uint16)  # 0, 100 and 255 in 8 bits
    Image.fromarray(levels).save(tmp_path / "deep", format=fmt)
    decoded = open_image(tmp_path / "deep")
    assert [decoded.getpixel((x, 0)) for x in range(3)] == [(0, 0, 0), (100, 100, 100), (255, 255, 255)]


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_transparent_palette_entries_become_white(fmt):
    img = Image.new("P", (4, 4), 1)
    img.putpalette([0, 0, 0, 200, 30, 30])
    img.putpixel((0, 0), 0)
    buf = io.BytesIO()
    img.save(buf, format=fmt, transparency=0)
    decoded = open_image(buf.getvalue())
    assert decoded.getpixel((0, 0)) == (255, 255, 255) and decoded.getpixel((1, 1)) == (200, 30, 30)


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert open_image(buf.getvalue()).getpixel((4, 4)) == (255, 0, 0)


HEIC_HEAD = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"


def test_heic_without_pillow_heif_says_how_to_enable_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # makes `import pillow_heif` fail
    (tmp_path / "IMG_0001.HEIC").write_bytes(HEIC_HEAD)
    user_error(tmp_path / "IMG_0001.HEIC", r"HEIC.*pip install 'edgelmm\[heif\]'")


def test_heic_registers_pillow_heif_when_it_is_installed(monkeypatch):
    registered = []
    monkeypatch.setitem(sys.modules, "pillow_heif", SimpleNamespace(register_heif_opener=lambda: registered.append(1)))
    user_error(HEIC_HEAD, "cannot read the image data")  # the fake registers nothing Pillow could open
    assert registered == [1]


def png_header(w, h):
    """A PNG that declares w x h pixels in a few bytes (Pillow reads the size before any pixel)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def test_decompression_bombs_are_refused_and_pillow_settings_restored(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # an application that turned Pillow's guard off
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    (tmp_path / "bomb.png").write_bytes(png_header(100_000, 100_000))
    user_error(tmp_path / "bomb.png", "more than 250 megapixels")
    # Between the limit and twice it, where Pillow only warns (and, for WebP, says nothing).
    monkeypatch.setattr(imaging, "MAX_PIXELS", 1000)
    for fmt in ("PNG", "WEBP"):
        smooth_photo(40, 40).save(tmp_path / f"big.{fmt}", format=fmt)
        user_error(tmp_path / f"big.{fmt}", "more than 0.001 megapixels")
    assert Image.MAX_IMAGE_PIXELS is None and ImageFile.LOAD_TRUNCATED_IMAGES is True


def test_truncated_empty_and_directory_are_user_errors(tmp_path, monkeypatch):
    buf = io.BytesIO()
    smooth_photo().save(buf, format="JPEG")
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # would give a half-grey photo
    user_error(tmp_path / "cut.jpg", "truncated")
    (tmp_path / "empty.jpg").write_bytes(b"")
    user_error(tmp_path / "empty.jpg", "empty")
    user_error(tmp_path, "is a directory")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_is_a_user_error(tmp_path):
    path = tmp_path / "locked.png"
    smooth_photo().save(path)
    path.chmod(0)
    user_error(path, "permission denied")


@pytest.mark.parametrize("size", [(1, 1), (20000, 100), (100, 20000), (1, 100_000)])
@pytest.mark.parametrize("spec", [CLIP, SIGLIP])
def test_tiny_and_very_thin_images_are_processed(size, spec):
    x = preprocess(Image.new("RGB", size, (200, 100, 50)), spec)
    expected = (np.array([200, 100, 50]) / 255 - spec.mean) / spec.std
    assert x.shape == (3, 32, 32) and np.allclose(x, expected[:, None, None], atol=1e-5)


def test_letterbox_fits_the_whole_image_on_the_mean_colour():
    """llama.cpp's LLaVA-1.5 preprocessing: scaled to fit (edges rounded up), centred, padded with the
    mean colour, which normalizes to about zero."""
    wide = preprocess(Image.new("RGB", (64, 20), (200, 100, 50)), LETTERBOX)  # fits as 32 x 10, rows 11..20
    colour = (np.array([200, 100, 50]) / 255 - LETTERBOX.mean) / LETTERBOX.std
    assert np.allclose(wide[:, 11:21], colour[:, None, None], atol=1e-5)
    assert np.abs(wide[:, :11]).max() < 0.02 and np.abs(wide[:, 21:]).max() < 0.02
    tall = preprocess(Image.new("RGB", (20, 64), (200, 100, 50)), LETTERBOX)
    assert np.allclose(tall, wide.transpose(0, 2, 1))
    with pytest.raises(UserError, match="no letterbox"):
        LETTERBOX.to_hf()


@pytest.mark.parametrize("size", [(1, 1), (20000, 100), (100, 20000), (1, 100_000)])
def test_letterbox_takes_any_shape(size):
    assert preprocess(Image.new("RGB", size, (200, 100, 50)), LETTERBOX).shape == (3, 32, 32)


def test_very_thin_images_resample_only_the_crop_and_stay_close(monkeypatch):
    img = smooth_photo(300, 40)
    exact = preprocess(img, CLIP)
    monkeypatch.setattr(imaging, "_MAX_RESIZED_PIXELS", 0)
    levels = np.abs(preprocess(img, CLIP) - exact) * np.array(CLIP.std)[:, None, None] * 255
    assert levels.max() <= 4 and levels.mean() < 0.5
