"""Image loading and the preprocessing every model of edgelmm sees (Pillow + NumPy only).

Training, export and the runtime all go through `preprocess`, driven by an `ImageSpec` that is stored
with each checkpoint, so a model sees exactly the same pixels wherever it runs.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from edgelmm.errors import UserError

RESIZE_RULES = ("shortest_edge_crop", "squash")
_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
# Pillow's enum values, as Hugging Face image processors store them in preprocessor_config.json.
_HF_RESAMPLE = {"bilinear": 2, "bicubic": 3}


@dataclass(frozen=True)
class ImageSpec:
    """How an image becomes `pixel_values`: resize rule, size, resampling filter, normalization (RGB)."""

    size: int
    resize: str = "shortest_edge_crop"  # CLIP: shortest edge to `size`, centre crop; "squash": SigLIP
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
    """Decode a path, bytes, PIL image or HxWx3 uint8 array into an upright RGB PIL image."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise UserError(f"an image array must be HxWx3 uint8, got {image.shape} {image.dtype}")
        return Image.fromarray(image, "RGB")
    if isinstance(image, Image.Image):
        img = image
    else:
        source = io.BytesIO(image) if isinstance(image, (bytes, bytearray)) else Path(image)
        try:
            img = Image.open(source)
            img.load()
        except FileNotFoundError:
            raise UserError(f"image not found: {image}") from None
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            name = "image bytes" if isinstance(source, io.BytesIO) else str(image)
            raise UserError(f"cannot read {name} as an image: {e}") from None
    img = ImageOps.exif_transpose(img)  # phone photos store their rotation in EXIF
    if img.mode != "RGB":
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            # Composite transparency onto white rather than letting it turn black.
            rgba = img.convert("RGBA")
            img = Image.new("RGB", rgba.size, (255, 255, 255))
            img.paste(rgba, mask=rgba.getchannel("A"))
        else:
            img = img.convert("RGB")
    return img


def preprocess(image, spec: ImageSpec) -> np.ndarray:
    """The model input for one image: float32 array (3, size, size), normalized RGB."""
    img = open_image(image)
    w, h = img.size
    resample = _RESAMPLE[spec.resample]
    if spec.resize == "squash":
        img = img.resize((spec.size, spec.size), resample)
    else:
        # Shortest edge to `size` (the long edge truncated as Hugging Face does), then a centre crop.
        short, long = (w, h) if w <= h else (h, w)
        new_long = int(spec.size * long / short)
        new_w, new_h = (spec.size, new_long) if w <= h else (new_long, spec.size)
        img = img.resize((new_w, new_h), resample)
        left, top = (new_w - spec.size) // 2, (new_h - spec.size) // 2
        img = img.crop((left, top, left + spec.size, top + spec.size))
    x = np.asarray(img, dtype=np.float32) / 255.0  # (H, W, 3)
    x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))  # (3, H, W)
