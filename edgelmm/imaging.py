"""Image loading and the preprocessing every model of edgelmm sees (Pillow + NumPy only).

Training, export and the runtime all go through `preprocess`, driven by an `ImageSpec` that is stored
with each checkpoint, so a model sees exactly the same pixels wherever it runs.
"""

from __future__ import annotations

import contextlib
import io
import math
import struct
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps

from edgelmm.errors import UserError
from edgelmm.fsutil import open_regular

RESIZE_RULES = ("shortest_edge_crop", "squash", "letterbox")
# The decompression-bomb guard: more pixels than this are refused before decoding. It lies above the
# 200 MP of the largest phone cameras (a decoded RGB image this size takes 750 MB).
MAX_PIXELS = 250_000_000
# The second guard: a large image from a file far smaller than any photo of its size. PNG's deflate and
# JPEG stop near 350 RGB pixels per byte even for one flat colour; a 745-byte BMP (run-length coded,
# which Pillow decodes in Python) declaring 54 megapixels took six seconds to decode. (A blank page
# scanned at one bit per pixel compresses further, and is refused too.)
MAX_PIXELS_PER_BYTE = 1000
_RATIO_CHECKED_FROM = 4_000_000  # pixels: small images decode quickly whatever their ratio
# The largest resized image `preprocess` makes before its centre crop (48 MB in RGB). Only very thin
# images go past it (beyond about 1:100 at size 384), and they are cropped first.
_MAX_RESIZED_PIXELS = 2**24
_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
# Pillow's enum values, as Hugging Face image processors store them in preprocessor_config.json.
_HF_RESAMPLE = {"bilinear": 2, "bicubic": 3}


@dataclass(frozen=True)
class ImageSpec:
    """How an image becomes `pixel_values`: resize rule, size, resampling filter, normalization (RGB)."""

    size: int
    # "shortest_edge_crop" (CLIP): shortest edge to `size`, centre crop; "squash" (SigLIP): both edges to
    # `size`; "letterbox" (llama.cpp's LLaVA-1.5 preprocessing): the whole image fitted inside a square of
    # the mean colour, centred
    resize: str = "shortest_edge_crop"
    resample: str = "bicubic"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_RULES:
            raise UserError(f"unknown resize rule {self.resize!r}; valid: {', '.join(RESIZE_RULES)}")
        if self.resample not in _RESAMPLE:
            raise UserError(f"unknown resampling filter {self.resample!r}; valid: {', '.join(_RESAMPLE)}")

    def to_dict(self) -> dict:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict) -> ImageSpec:
        return cls(size=int(d["size"]), resize=d["resize"], resample=d["resample"],
                   mean=tuple(d["mean"]), std=tuple(d["std"]))

    def to_hf(self) -> dict:
        """The equivalent Hugging Face image-processor config (preprocessor_config.json)."""
        common = {"do_resize": True, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                  "do_convert_rgb": True, "image_mean": list(self.mean), "image_std": list(self.std),
                  "resample": _HF_RESAMPLE[self.resample]}
        if self.resize == "letterbox":
            raise UserError("Hugging Face image processors have no letterbox resize")
        if self.resize == "shortest_edge_crop":
            return {"image_processor_type": "CLIPImageProcessor", **common,
                    "size": {"shortest_edge": self.size}, "do_center_crop": True,
                    "crop_size": {"height": self.size, "width": self.size}}
        return {"image_processor_type": "SiglipImageProcessor", **common,
                "size": {"height": self.size, "width": self.size}}

    @classmethod
    def from_hf(cls, d: dict) -> ImageSpec:
        """Read a CLIP- or SigLIP-style preprocessor_config.json."""
        size = d.get("size", {})
        if isinstance(size, int):
            size = {"shortest_edge": size}
        names = {v: k for k, v in _HF_RESAMPLE.items()}
        common = {"resample": names.get(d.get("resample", 3), "bicubic"),
                  "mean": tuple(d.get("image_mean", (0.5,) * 3)), "std": tuple(d.get("image_std", (0.5,) * 3))}
        if "shortest_edge" in size:
            crop = d.get("crop_size", {}) or {}
            crop_side = crop.get("height", size["shortest_edge"]) if isinstance(crop, dict) else int(crop)
            if crop_side != size["shortest_edge"]:
                raise UserError("image processors that crop to a size other than the resize size are not supported")
            return cls(size=int(size["shortest_edge"]), resize="shortest_edge_crop", **common)
        if size.get("height") != size.get("width"):
            raise UserError(f"non-square image processor size {size} is not supported")
        return cls(size=int(size["height"]), resize="squash", **common)


def open_image(image) -> Image.Image:
    """Decode a path, bytes, PIL image or HxWx3 uint8 array into an upright RGB PIL image.

    Anything wrong with the input (not an image, truncated, empty, a directory, unreadable, too many
    pixels, HEIC without pillow-heif) is a UserError with a one-line message naming the file.
    """
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise UserError(f"an image array must be HxWx3 uint8, got {image.shape} {image.dtype}")
        return Image.fromarray(image, "RGB")
    if isinstance(image, Image.Image):
        try:
            return _upright_rgb(image)
        except _DECODE_ERRORS as e:
            raise UserError(f"cannot use the given image: {e}") from None
    if isinstance(image, (bytes, bytearray, memoryview)):
        return _decode(io.BytesIO(image), "the image data")
    path = Path(image)
    with open_regular(path, "image") as fp:
        return _decode(fp, str(path))


# What Pillow raises for corrupt or unsupported files: its own fuzz tests accept OSError, SyntaxError,
# ValueError, NotImplementedError and EOFError; RuntimeError comes from pillow-heif, and fuzzing found
# TypeError (a TIFF whose strip offset decodes as a float) and struct.error among its plugins' parsers.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, NotImplementedError, EOFError, RuntimeError, TypeError,
                  struct.error, IndexError, KeyError, ZeroDivisionError, OverflowError)
# ISO base media file brands of HEIF still images (iPhone photos are "heic").
_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1")


def _decode(fp, name: str) -> Image.Image:
    head = fp.read(12)
    fp.seek(0)
    if not head:
        raise UserError(f"{name} is empty (0 bytes)")
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS and not _heif_registered():
        raise UserError(f"{name} is a HEIC/HEIF photo; to read it, install HEIF support: "
                        "pip install 'edgelmm[heif]'")
    try:
        with _pillow_limits(), Image.open(fp) as img:
            pixels = img.width * img.height
            if pixels > MAX_PIXELS:  # Pillow's WebP check only fails at twice its limit
                raise Image.DecompressionBombError(f"{img.width}x{img.height}")
            size = fp.seek(0, io.SEEK_END)
            if pixels >= _RATIO_CHECKED_FROM and pixels > MAX_PIXELS_PER_BYTE * size:
                raise UserError(f"{name} declares {img.width}x{img.height} pixels in {size} bytes, far more than "
                                "any photo holds: a damaged file or a decompression bomb")
            fp.seek(0)
            img.load()
            return _upright_rgb(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UserError(f"{name} has more than {MAX_PIXELS / 1e6:g} megapixels, too many to decode "
                        "safely") from None
    except Image.UnidentifiedImageError:
        raise UserError(f"cannot read {name}: not an image, or a damaged one "
                        "(edgelmm reads JPEG, PNG, WebP, BMP, GIF, TIFF and HEIC)") from None
    except _DECODE_ERRORS as e:
        raise UserError(f"cannot read {name} as an image: {e}") from None


def _heif_registered() -> bool:
    """Register pillow-heif's opener with Pillow if the optional `heif` extra is installed."""
    # Imported only when a HEIF file arrives, so other photos never pay for it; registering is idempotent.
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


@contextlib.contextmanager
def _pillow_limits():
    """Pillow's settings as edgelmm needs them, for the duration of one decode."""
    # Set around each decode and restored after it, so that neither an application's setting (a training
    # script may set MAX_IMAGE_PIXELS = None or LOAD_TRUNCATED_IMAGES = True) weakens the guards nor
    # edgelmm's leaks out. Not thread-safe: decoding happens in one thread per process here.
    saved = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    # Pillow only warns above MAX_IMAGE_PIXELS (it fails above twice that): the warning becomes an error.
    Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = MAX_PIXELS, False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # Pillow's notes on damaged metadata: not for users
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _upright_rgb(img: Image.Image) -> Image.Image:
    """A new RGB image with EXIF orientation applied; the input is left as it was."""
    img = ImageOps.exif_transpose(img)  # phone photos store their rotation in EXIF
    if img.mode == "I" or img.mode.startswith("I;16"):
        # 16-bit grayscale (PNG, TIFF): scale 0..65535 to 0..255, where Pillow's conversion would clip.
        a = np.clip(np.asarray(img), 0, 65535).astype(np.uint32)
        img = Image.fromarray(((a * 255 + 32767) // 65535).astype(np.uint8))
    # Alpha, a transparent palette entry or colour key (Image.has_transparency_data needs pillow 10.1).
    if img.mode in ("RGBA", "LA", "PA", "RGBa") or "transparency" in img.info:
        # Composite transparency onto white rather than letting it turn black.
        rgba = img.convert("RGBA")
        img = Image.new("RGB", rgba.size, (255, 255, 255))
        img.paste(rgba, mask=rgba.getchannel("A"))
    return img if img.mode == "RGB" else img.convert("RGB")  # palette, CMYK, grayscale, YCbCr...


def _letterbox(img: Image.Image, spec: ImageSpec, resample) -> Image.Image:
    """The whole image scaled to fit `size` x `size` (edges rounded up, as llama.cpp does), centred on the
    mean colour (LLaVA-1.5's padding colour: normalized, it is zero)."""
    w, h = img.size
    scale = min(spec.size / w, spec.size / h)
    new_w, new_h = min(math.ceil(w * scale), spec.size), min(math.ceil(h * scale), spec.size)
    canvas = Image.new("RGB", (spec.size, spec.size), tuple(int(m * 255) for m in spec.mean))
    canvas.paste(img.resize((new_w, new_h), resample), ((spec.size - new_w) // 2, (spec.size - new_h) // 2))
    return canvas


def preprocess(image, spec: ImageSpec) -> np.ndarray:
    """The model input for one image: float32 array (3, size, size), normalized RGB.

    Every size is accepted, 1x1 and 1:1000 strips included: a user still gets an answer about what is
    there, and a minimum size would only turn an odd photo into an error.
    """
    img = open_image(image)
    w, h = img.size
    resample = _RESAMPLE[spec.resample]
    if spec.resize == "squash":
        img = img.resize((spec.size, spec.size), resample)
    elif spec.resize == "letterbox":
        img = _letterbox(img, spec, resample)
    else:
        # Shortest edge to `size` (the long edge truncated as Hugging Face does), then a centre crop.
        short, long = (w, h) if w <= h else (h, w)
        new_long = int(spec.size * long / short)
        new_w, new_h = (spec.size, new_long) if w <= h else (new_long, spec.size)
        left, top = (new_w - spec.size) // 2, (new_h - spec.size) // 2
        if new_w * new_h <= _MAX_RESIZED_PIXELS:
            img = img.resize((new_w, new_h), resample).crop((left, top, left + spec.size, top + spec.size))
        else:
            # A very thin image (1 x 100,000 would become 32 x 3,200,000): resample only the crop, given as
            # `box` in source pixels, from a whole-pixel cut around it wide enough for the filter (which also
            # keeps `box`, a float32 in Pillow, precise). Pillow may order its two passes differently then,
            # so pixels can differ a little from the path above, which ordinary aspect ratios take.
            sx, sy = w / new_w, h / new_h
            box = (left * sx, top * sy, min(w, (left + spec.size) * sx), min(h, (top + spec.size) * sy))
            pad = 2 * max(sx, sy, 1) + 1  # how far bicubic reads either side, in source pixels, plus one
            x0, y0 = max(0, int(box[0] - pad)), max(0, int(box[1] - pad))
            x1, y1 = min(w, math.ceil(box[2] + pad)), min(h, math.ceil(box[3] + pad))
            img = img.crop((x0, y0, x1, y1)).resize(
                (spec.size, spec.size), resample, box=(box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0))
    # (x / 255 - mean) / std as one scale and one offset per channel, on a planar copy of the bytes:
    # ten times faster than the textbook order, and equal to it within float32 rounding.
    std = np.asarray(spec.std, np.float32)
    x = np.ascontiguousarray(np.asarray(img).transpose(2, 0, 1)).astype(np.float32)  # (3, H, W)
    x *= (1 / (255 * std))[:, None, None]
    x += (-np.asarray(spec.mean, np.float32) / std)[:, None, None]
    return x
