"""An mmproj GGUF's vision tower and projector rebuilt in torch, to be exported to ONNX like our own.

Supported: llama.cpp's `mlp` projector with both its linear layers (LLaVA-1.5's two-layer MLP with
GELU, edgelmm's `mlp2x_gelu`) on a ViT with a CLS token (CLIP) or without (SigLIP), at one fixed image
size. Other projectors, LLaVA-1.6 tiling (image_grid_pinpoints) and audio encoders are refused by name.

The features are the ones llama.cpp computes for this projector: the hidden states after each layer
in `clip.vision.feature_layer` (several are concatenated in ascending order), else after
`block_count - 1` layers, with CLS dropped. The images are letterboxed as llama.cpp does for it.

CLS layout: the rebuilt tower is Hugging Face's, with CLS first at position 0 and the patches after it,
the layout CLIP towers are trained in. llama.cpp's CLIP graph appends CLS after the patches, gives
positions in order and reads rows 1..N (llama.cpp #25814): its image embeddings differ from the
model's own (tests/test_import_gguf.py measures by how much). SigLIP towers have no CLS; there both agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch

from edgelmm.imaging import ImageSpec
from edgelmm.importers.gguf_file import GGUFError, GGUFFile
from edgelmm.importers.lm import MMPROJ_ARCH

SUPPORTED_PROJECTORS = ("mlp",)
V = "clip.vision."


@dataclass
class VisionHalf:
    """A tower + projector laid out as `VisionEncoder` reads a LLaVA model (`config`, `model.vision_tower`,
    `model.multi_modal_projector`), with the preprocessing its images need."""

    config: object  # a LlavaConfig whose text part carries only the language model's width
    model: SimpleNamespace
    image_spec: ImageSpec

    @property
    def width(self) -> int:
        return self.config.text_config.hidden_size


def _feature_layers(gguf: GGUFFile, n_layers: int) -> list[int]:
    layers = gguf.get(V + "feature_layer") or []
    if not isinstance(layers, list) or not all(isinstance(x, int) and 0 <= x <= n_layers for x in layers):
        raise GGUFError(f"{gguf.path.name}: feature layers {layers!r} are not layers of a {n_layers}-layer tower")
    if not layers:
        if "v.post_ln.weight" in gguf.tensors:
            raise GGUFError(f"{gguf.path.name} reads its features after the tower's final norm; "
                            "only towers read at a hidden layer (LLaVA's) are supported")
        layers = [n_layers - 1]  # llama.cpp's default for LLaVA projectors: the second-to-last layer
    return sorted(set(layers))


def _activation(gguf: GGUFFile) -> str:
    # llama.cpp's GELU is the tanh approximation; without a flag its tower uses quick GELU.
    if gguf.get("clip.use_gelu"):
        return "gelu_pytorch_tanh"
    return "silu" if gguf.get("clip.use_silu") else "quick_gelu"


def _check_kind(gguf: GGUFFile) -> None:
    name = gguf.path.name
    if gguf.architecture != MMPROJ_ARCH:
        raise GGUFError(f"{name} is not an mmproj GGUF (its architecture is {gguf.architecture!r}, not 'clip'); "
                        "give the language model first and the mmproj second")
    if not gguf.get("clip.has_vision_encoder"):
        raise GGUFError(f"{name} has no vision encoder")
    projector = gguf.get("clip.projector_type") or gguf.get(V + "projector_type")
    if projector not in SUPPORTED_PROJECTORS or "mm.2.weight" not in gguf.tensors:
        raise GGUFError(f"{name}: the {projector!r} projector is not supported; supported: llama.cpp's "
                        "'mlp' with two linear layers (LLaVA-1.5)")
    if gguf.get(V + "image_grid_pinpoints"):
        raise GGUFError(f"{name} tiles images (LLaVA-1.6 image_grid_pinpoints), which is not supported")


def _vision_config(gguf: GGUFFile, has_cls: bool):
    from edgelmm.modeling.vision_towers import VISION_ARCHS

    arch = VISION_ARCHS.get("clip" if has_cls else "siglip")
    config = arch.make_config(
        hidden_size=int(gguf.require(V + "embedding_length")),
        intermediate_size=int(gguf.require(V + "feed_forward_length")),
        num_hidden_layers=int(gguf.require(V + "block_count")),
        num_attention_heads=int(gguf.require(V + "attention.head_count")),
        image_size=int(gguf.require(V + "image_size")), patch_size=int(gguf.require(V + "patch_size")),
        layer_norm_eps=float(gguf.require(V + "attention.layer_norm_epsilon")), hidden_act=_activation(gguf))
    return arch, config


def _load(module: torch.nn.Module, arrays: dict[str, torch.Tensor], gguf: GGUFFile) -> None:
    expected = module.state_dict()
    for name, value in arrays.items():
        if tuple(value.shape) != tuple(expected[name].shape):
            raise GGUFError(f"{gguf.path.name}: tensor for {name} has shape {tuple(value.shape)}, "
                            f"the header's sizes give {tuple(expected[name].shape)}")
    module.load_state_dict(arrays, strict=False)


def read_mmproj(gguf: GGUFFile) -> VisionHalf:
    """The vision tower and projector of the mmproj `gguf`; a GGUFError for anything unsupported."""
    from transformers import LlavaConfig

    from edgelmm.export.mmproj import PROJECTOR_NAMES, tower_module, tower_tensor_name
    from edgelmm.modeling.projectors import build_projector

    _check_kind(gguf)
    has_cls = "v.class_embd" in gguf.tensors
    arch, vision_config = _vision_config(gguf, has_cls)
    layers = _feature_layers(gguf, vision_config.num_hidden_layers)
    width = gguf.tensor("mm.2.weight").shape[0]
    config = LlavaConfig(vision_config=vision_config.to_dict(),
                         text_config={"model_type": "llama", "hidden_size": width},
                         vision_feature_layer=layers[0] if len(layers) == 1 else layers,
                         vision_feature_select_strategy=arch.select_strategy,
                         projector_type="mlp2x_gelu", image_token_index=0)
    with torch.device("cpu"):
        tower = arch.model_cls()(vision_config).eval()
        projector = build_projector(config).eval()
    vit = tower_module(tower)
    arrays = {}
    for hf_name, param in vit.state_dict().items():
        named = tower_tensor_name(hf_name)
        if named is None:
            continue  # not part of LLaVA's features
        gguf_name = named[0]
        if gguf_name in gguf.tensors:
            arrays[hf_name] = torch.from_numpy(gguf.tensor(gguf_name))
        elif gguf_name.startswith("v.pre_ln."):  # llama.cpp's pre-norm is optional: without it, identity
            arrays[hf_name] = torch.ones_like(param) if gguf_name.endswith("weight") else torch.zeros_like(param)
        elif gguf_name == "v.patch_embd.bias":
            arrays[hf_name] = torch.zeros_like(param)
        else:
            raise GGUFError(f"{gguf.path.name} has no tensor {gguf_name}")
    if not has_cls and "v.pre_ln.weight" in gguf.tensors:
        raise GGUFError(f"{gguf.path.name}: a tower without CLS but with a pre-norm is not supported")
    if has_cls and "v.patch_embd.bias" in gguf.tensors:
        raise GGUFError(f"{gguf.path.name}: a tower with CLS and a patch-embedding bias is not supported")
    _load(vit, arrays, gguf)
    _load(projector, {hf: torch.from_numpy(gguf.tensor(name)) for hf, name in PROJECTOR_NAMES.items()}, gguf)
    spec = ImageSpec(size=vision_config.image_size, resize="letterbox", resample="bicubic",
                     mean=tuple(float(x) for x in gguf.require(V + "image_mean")[:3]),
                     std=tuple(float(x) for x in gguf.require(V + "image_std")[:3]))
    return VisionHalf(config=config, model=SimpleNamespace(vision_tower=tower, multi_modal_projector=projector),
                      image_spec=spec)
