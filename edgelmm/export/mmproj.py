"""The vision tower + projector as an `mmproj` GGUF: the file llama.cpp's multimodal loader (libmtmd) reads.

edgelmm's own runtime runs `vision.onnx`; this file lets llama.cpp's tools (and the apps built on them)
run the same weights, and lets the real-scale benchmark measure llama.cpp's own path on them. The layout
is the one llama.cpp's CLIP loader expects of a LLaVA-1.5 "mlp" projector: `v.*` tower tensors, `mm.0` /
`mm.2` for the projector's two linear layers, `clip.vision.*` hyperparameters. Only the layers up to
the feature layer are written, and the feature layer is named explicitly, so llama.cpp computes the
same features as the ONNX graph (no post-layernorm: LLaVA reads hidden states, not the pooled output).

CLIP towers: llama.cpp's CLIP graph appends the CLS token after the patches while giving positions in
order, so its embeddings differ from Hugging Face's (llama.cpp issue #25814); SigLIP towers have no CLS
and match. Matrices are float16, norms, biases and the CLS embedding float32, as llama.cpp's own
converters write them.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from edgelmm.errors import ConfigError
from edgelmm.modeling.config import edgelmm_fields
from edgelmm.modeling.vision_encoder import feature_depth

MMPROJ_FILE = "mmproj-f16.gguf"

# llama.cpp's key names (tools/mtmd/clip-impl.h), kept here as constants.
KEY_HAS_VISION = "clip.has_vision_encoder"
KEY_PROJECTOR_TYPE = "clip.projector_type"
KEY_USE_GELU = "clip.use_gelu"
VISION = "clip.vision."
LLAMA_CPP_PROJECTORS = {"mlp2x_gelu": "mlp"}  # edgelmm projector -> clip.projector_type

# Hugging Face tower names -> llama.cpp tensor names; `{}` is the layer index.
_TOWER_NAMES = [
    (r"embeddings\.class_embedding", "v.class_embd"),
    (r"embeddings\.patch_embedding\.(weight|bias)", "v.patch_embd.{0}"),
    (r"embeddings\.position_embedding\.weight", "v.position_embd.weight"),
    (r"pre_layrnorm\.(weight|bias)", "v.pre_ln.{0}"),
    (r"encoder\.layers\.(\d+)\.self_attn\.q_proj\.(weight|bias)", "v.blk.{0}.attn_q.{1}"),
    (r"encoder\.layers\.(\d+)\.self_attn\.k_proj\.(weight|bias)", "v.blk.{0}.attn_k.{1}"),
    (r"encoder\.layers\.(\d+)\.self_attn\.v_proj\.(weight|bias)", "v.blk.{0}.attn_v.{1}"),
    (r"encoder\.layers\.(\d+)\.self_attn\.out_proj\.(weight|bias)", "v.blk.{0}.attn_out.{1}"),
    (r"encoder\.layers\.(\d+)\.layer_norm1\.(weight|bias)", "v.blk.{0}.ln1.{1}"),
    (r"encoder\.layers\.(\d+)\.layer_norm2\.(weight|bias)", "v.blk.{0}.ln2.{1}"),
    (r"encoder\.layers\.(\d+)\.mlp\.fc1\.(weight|bias)", "v.blk.{0}.ffn_up.{1}"),
    (r"encoder\.layers\.(\d+)\.mlp\.fc2\.(weight|bias)", "v.blk.{0}.ffn_down.{1}"),
]
# Not part of LLaVA's features: the pooled output's norm and SigLIP's attention-pooling head.
_UNUSED = re.compile(r"post_layernorm\.|head\.")
PROJECTOR_NAMES = {"linear_1.weight": "mm.0.weight", "linear_1.bias": "mm.0.bias",
                    "linear_2.weight": "mm.2.weight", "linear_2.bias": "mm.2.bias"}
# The tower's FFN activation -> clip.use_gelu (llama.cpp's default without it is quick GELU).
_GELU_ACTS = {"quick_gelu": False, "gelu": True, "gelu_pytorch_tanh": True, "gelu_new": True}


def check_mmproj(parts) -> None:
    config = parts.model.config
    projector = edgelmm_fields(config).projector
    if projector not in LLAMA_CPP_PROJECTORS:
        raise ConfigError(f"llama.cpp has no mmproj layout for the {projector!r} projector; "
                          f"supported: {', '.join(LLAMA_CPP_PROJECTORS)}")
    act = config.vision_config.hidden_act
    if act not in _GELU_ACTS:
        raise ConfigError(f"llama.cpp's CLIP graph has no {act!r} activation")
    has_cls = hasattr(_tower(parts).embeddings, "class_embedding")
    if has_cls and config.vision_feature_select_strategy != "default":
        raise ConfigError("llama.cpp's LLaVA graph always drops the CLS token; this model keeps it "
                          "(vision_feature_select_strategy 'full')")
    feature_depth(config)


def tower_module(tower):
    """The ViT itself inside a LLaVA vision tower (older transformers wrap it once more)."""
    return getattr(tower, "vision_model", tower)


def _tower(parts):
    return tower_module(parts.model.model.vision_tower)


def tower_tensor_name(hf_name: str) -> tuple[str, int | None] | None:
    """llama.cpp's name for the Hugging Face tower tensor `hf_name` and its layer (None outside the
    layers); None for tensors LLaVA's features never use."""
    if _UNUSED.match(hf_name) or hf_name.endswith("position_ids"):
        return None
    for pattern, template in _TOWER_NAMES:
        match = re.fullmatch(pattern, hf_name)
        if match:
            layer = int(match.group(1)) if hf_name.startswith("encoder.layers.") else None
            return template.format(*match.groups()), layer
    raise ConfigError(f"no mmproj name for vision tensor {hf_name}")


def _tensors(parts, depth: int):
    """(llama.cpp name, float32 array) of the tower up to `depth` layers and the projector."""
    for hf_name, tensor in _tower(parts).state_dict().items():
        named = tower_tensor_name(hf_name)
        if named is None or (named[1] is not None and named[1] >= depth):
            continue  # unused, or past the feature layer: never part of the features
        yield named[0], tensor.detach().float().numpy()
    for hf_name, tensor in parts.model.model.multi_modal_projector.state_dict().items():
        yield PROJECTOR_NAMES[hf_name], tensor.detach().float().numpy()


def export_mmproj(parts, path: str | Path, name: str = "edgelmm") -> Path:
    """Write the vision tower and projector of `parts` (ModelParts) as an f16 mmproj GGUF at `path`."""
    from gguf import GGUFWriter, LlamaFileType

    check_mmproj(parts)
    config = parts.model.config
    vision = config.vision_config
    depth = feature_depth(config)
    spec = parts.image_spec
    writer = GGUFWriter(str(path), "clip")
    writer.add_name(name)
    writer.add_file_type(LlamaFileType.MOSTLY_F16)
    writer.add_bool(KEY_HAS_VISION, True)
    writer.add_string(KEY_PROJECTOR_TYPE, LLAMA_CPP_PROJECTORS[edgelmm_fields(config).projector])
    writer.add_bool(KEY_USE_GELU, _GELU_ACTS[vision.hidden_act])
    writer.add_uint32(VISION + "image_size", vision.image_size)
    writer.add_uint32(VISION + "patch_size", vision.patch_size)
    writer.add_uint32(VISION + "embedding_length", vision.hidden_size)
    writer.add_uint32(VISION + "feed_forward_length", vision.intermediate_size)
    writer.add_uint32(VISION + "projection_dim", config.text_config.hidden_size)
    writer.add_uint32(VISION + "block_count", depth)
    writer.add_uint32(VISION + "attention.head_count", vision.num_attention_heads)
    writer.add_float32(VISION + "attention.layer_norm_epsilon", vision.layer_norm_eps)
    writer.add_array(VISION + "image_mean", [float(v) for v in spec.mean])
    writer.add_array(VISION + "image_std", [float(v) for v in spec.std])
    # The output of the last written layer is the feature (index 0 would be the embeddings).
    writer.add_array(VISION + "feature_layer", [depth])
    for tensor_name, array in _tensors(parts, depth):
        # 1-D tensors (norms, biases, CLS) stay float32: llama.cpp adds them to float32 activations.
        writer.add_tensor(tensor_name, array.astype(np.float16 if array.ndim >= 2 else np.float32))
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return Path(path)
