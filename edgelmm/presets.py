"""Named model configurations: the edgelmm model family.

A preset is data: the vision tower, the projector and the language model, each as a registered
architecture name plus its transformers config arguments. `edgelmm.modeling.build_model` turns one
into a model. Importing this module does not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgelmm.registry import Registry


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str
    vision_arch: str  # a name in edgelmm.modeling.vision_towers.VISION_ARCHS
    vision: dict  # vision config arguments (image_size, patch_size, hidden_size, ...)
    lm_arch: str  # a name in edgelmm.modeling.lm.LANGUAGE_ARCHS
    lm: dict  # language-model config arguments (hidden_size, num_hidden_layers, vocab_size, ...)
    projector: str = "mlp2x_gelu"
    projector_args: dict = field(default_factory=dict)
    feature_layer: int = -2  # LLaVA-1.5: the second-to-last layer of the tower
    # Per-stage tuning of edgelmm.train.stages defaults: {"stage": {"lr": ..., "epochs": ..., "trains": [...]}}
    training: dict = field(default_factory=dict)


PRESETS: Registry[Preset] = Registry("preset")


def get_preset(name: str) -> Preset:
    return PRESETS.get(name)


PRESETS.add("tiny", Preset(
    name="tiny",
    summary="for tests: builds and runs a forward pass in milliseconds",
    vision_arch="clip",
    vision=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                num_hidden_layers=2, num_attention_heads=2),
    lm_arch="phi3",
    lm=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=4, vocab_size=512, max_position_embeddings=512),
    training={stage: {"lr": 1e-3, "epochs": 1, "batch_size": 4, "grad_accum": 1, "max_length": 256}
              for stage in ("clip", "lm", "align", "instruct")},
))

# The embedded default model, trained from scratch on EdgeScenes on a 2-core CPU in about an hour.
# EdgeScenes' 224 px scenes are seen at 128 px (8x8 patches of 16 px): the smallest objects still span
# about one patch. LM widths are multiples of 256 so llama.cpp's Q4_K applies to every matrix.
PRESETS.add("demo", Preset(
    name="demo",
    summary="embedded default: trained from scratch on EdgeScenes in about an hour on 2 cores",
    vision_arch="clip",
    vision=dict(image_size=128, patch_size=16, hidden_size=192, intermediate_size=768,
                num_hidden_layers=4, num_attention_heads=3),
    lm_arch="phi3",
    lm=dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=4, vocab_size=768, max_position_embeddings=512),
    # Tuned for about 70 minutes on 2 CPU cores with 10,000 EdgeScenes images. A from-scratch model
    # this small learns far faster than LLaVA's 2e-5. Unlike LLaVA, instruct tunes the tower too, at a
    # twentieth of the rate: at the full rate the language model's gradients erased the shapes the clip
    # stage had taught it; at this rate it keeps them (and the model gains 0.5-2.5 points). Three
    # instruct epochs instead of 1.5 took the model from 68.5% to 79.1% on its held-out questions.
    training={
        # Small batches: a ViT trained from scratch needs many updates before it sees shapes.
        "clip": {"lr": 5e-4, "epochs": 6, "batch_size": 32, "warmup": 0.05},
        "lm": {"lr": 1e-3, "epochs": 0.35, "batch_size": 32, "max_length": 256},
        "align": {"lr": 1e-3, "epochs": 1, "batch_size": 32, "grad_accum": 1, "max_length": 256},
        "instruct": {"lr": 5e-4, "epochs": 3, "batch_size": 16, "grad_accum": 1, "max_length": 256,
                     "trains": ["projector", "language_model", "vision_tower"], "vision_lr_scale": 0.05},
    },
))

# LLaVA-1.5 recipe on a Phi-3-mini-4k language model (as in llava-phi-3-mini).
PRESETS.add("llava-phi3-mini", Preset(
    name="llava-phi3-mini",
    summary="real scale: CLIP ViT-L/14-336 + Phi-3-mini-4k, MLP projector (576 image tokens)",
    vision_arch="clip",
    vision=dict(image_size=336, patch_size=14, hidden_size=1024, intermediate_size=4096,
                num_hidden_layers=24, num_attention_heads=16, projection_dim=768,
                hidden_act="quick_gelu", layer_norm_eps=1e-5),
    lm_arch="phi3",
    lm=dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=32, num_attention_heads=32,
            num_key_value_heads=32, vocab_size=32064, max_position_embeddings=4096,
            original_max_position_embeddings=4096, rope_theta=10000.0, rms_norm_eps=1e-5,
            sliding_window=2047),
))

PRESETS.add("llava-qwen2-0.5b", Preset(
    name="llava-qwen2-0.5b",
    summary="real scale: SigLIP-base/16-224 + Qwen2.5-0.5B, MLP projector (196 image tokens)",
    vision_arch="siglip",
    vision=dict(image_size=224, patch_size=16, hidden_size=768, intermediate_size=3072,
                num_hidden_layers=12, num_attention_heads=12, layer_norm_eps=1e-6,
                hidden_act="gelu_pytorch_tanh", vision_use_head=False),
    lm_arch="qwen2",
    lm=dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
            num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768,
            rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True),
))
