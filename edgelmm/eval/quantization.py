"""`edgelmm quantize report`: what each quantization level costs in size and changes in the answers.

Every level's GGUF runs in llama.cpp on prompts built from an eval set (image embeddings from the fp32
PyTorch vision path, so only the language model's quantization is measured) and is compared with the
fp32 PyTorch model's next-token distribution: top-1 agreement and mean KL(p_fp32 || p_quant).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from edgelmm.quantize.gguf import ALL_TYPES, EXPORT_TYPES, QUANT_SOURCE, quantize_gguf

REPORT_LEVELS = ("f32", "f16", "q8_0", "q4_k_m", "q4_0")


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def next_token_agreement(ref_logits: np.ndarray, logits: np.ndarray) -> dict:
    """Top-1 agreement and mean KL(p_ref || p) of next-token distributions given as logits (or
    log-probabilities), one row per position: the reference (fp32 PyTorch) and the model under test."""
    logp, logq = (_log_softmax(np.asarray(x, dtype=np.float64)) for x in (ref_logits, logits))
    kl = (np.exp(logp) * (logp - logq)).sum(-1)
    return {"top1_agreement": float(np.mean(logp.argmax(-1) == logq.argmax(-1))), "mean_kl": float(np.mean(kl))}


@torch.no_grad()
def reference_cases(parts, items: list[dict], image_folder: Path) -> list[dict]:
    """Per prompt: token pieces, fp32 image embeddings and the fp32 next-token log-probabilities."""
    from edgelmm.eval.evaluate import prompt_pieces
    from edgelmm.imaging import preprocess

    model, cfg = parts.model.eval(), parts.model.config
    embed = model.get_input_embeddings()
    cases = []
    for item in items:
        before, after = prompt_pieces(parts, item["question"])
        pixels = torch.from_numpy(preprocess(image_folder / item["image"], parts.image_spec))[None]
        image = model.get_image_features(pixel_values=pixels, vision_feature_layer=cfg.vision_feature_layer,
                                         vision_feature_select_strategy=cfg.vision_feature_select_strategy)
        image = image.pooler_output[0]  # (N, D)
        inputs = torch.cat([embed(torch.tensor(before)), image, embed(torch.tensor(after))])[None]
        logits = model.lm_head(model.model.language_model(inputs_embeds=inputs).last_hidden_state)[0, -1]
        cases.append({"before": before, "after": after, "image": image.numpy(),
                      "logp": _log_softmax(logits.numpy().astype(np.float64))})
    return cases


def compare_gguf(path: Path, cases: list[dict]) -> dict:
    from edgelmm.runtime.calibration import open_tuned
    from edgelmm.runtime.llama_batch import SequenceDecoder

    n_ctx = max(len(c["before"]) + len(c["image"]) + len(c["after"]) for c in cases) + 8
    llm = open_tuned(path, image_tokens=len(cases[0]["image"]), n_ctx=n_ctx)
    decoder = SequenceDecoder(llm)
    logits = []
    for case in cases:
        decoder.reset()
        decoder.tokens(case["before"])
        decoder.embeddings(case["image"])
        logits.append(decoder.tokens(case["after"]))
    llm.close()
    return next_token_agreement(np.stack([c["logp"] for c in cases]), np.stack(logits))


def quantization_report(checkpoint: str | Path, eval_json: str | Path, *, limit: int = 50,
                        levels: tuple[str, ...] = REPORT_LEVELS, image_folder: str | Path | None = None,
                        log=lambda message: None) -> dict:
    from edgelmm.eval.evaluate import read_eval_items
    from edgelmm.export.gguf_lm import export_gguf
    from edgelmm.modeling import load_checkpoint

    for level in levels:
        if level not in ALL_TYPES:
            raise ValueError(f"unknown level {level}")
    parts = load_checkpoint(checkpoint)
    items = [it for it in read_eval_items(eval_json, limit) if it.get("image")]
    folder = Path(image_folder) if image_folder else Path(eval_json).parent / "images"
    cases = reference_cases(parts, items, folder)
    lm_params = sum(p.numel() for p in parts.model.model.language_model.parameters())
    if not parts.model.config.tie_word_embeddings:
        lm_params += parts.model.lm_head.weight.numel()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        from edgelmm.export.onnx_vision import export_vision_onnx

        vision_bytes = export_vision_onnx(parts.model, Path(tmp) / "vision.onnx", parts.image_spec.size).stat().st_size
        # Quantized levels come from the same source file as in a bundle, so they are what a bundle ships.
        source = export_gguf(parts, Path(tmp) / f"lm-{QUANT_SOURCE}.gguf", dtype=QUANT_SOURCE)
        for level in levels:
            log(f"measuring {level}")
            path = Path(tmp) / f"lm-{level}.gguf"
            if level not in EXPORT_TYPES:
                quantize_gguf(source, path, level)
            elif not path.exists():
                export_gguf(parts, path, dtype=level)
            size = path.stat().st_size
            rows.append({"level": level, "lm_bytes": size, "bundle_bytes": size + vision_bytes,
                         "compression_vs_fp16": (2 * lm_params) / size,
                         **compare_gguf(path, cases)})
    return {"checkpoint": str(checkpoint), "prompts": len(cases), "lm_parameters": lm_params, "levels": rows}


def report_markdown(report: dict) -> str:
    lines = [f"Quantization report for {report['checkpoint']} ({report['prompts']} prompts, "
             f"{report['lm_parameters'] / 1e6:.1f}M LM parameters)", "",
             "| level | bundle size | LM size | LM vs fp16 | top-1 agreement | mean KL |",
             "|---|---|---|---|---|---|"]
    for r in report["levels"]:
        lines.append(f"| {r['level']} | {r['bundle_bytes'] / 1e6:.2f} MB | {r['lm_bytes'] / 1e6:.2f} MB | "
                     f"{r['compression_vs_fp16']:.2f}x | "
                     f"{r['top1_agreement']:.1%} | {r['mean_kl']:.5f} |")
    return "\n".join(lines)
