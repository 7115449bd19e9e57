"""Vision-graph precision: int8 (ONNX Runtime dynamic quantization, per channel) or float16."""

from __future__ import annotations

from pathlib import Path

from edgelmm.errors import UserError

VISION_PRECISIONS = ("fp32", "fp16", "int8")


def convert_vision(src: str | Path, dst: str | Path, precision: str) -> Path:
    """Write `src` at `precision` to `dst` (inputs and outputs stay float32 either way)."""
    import onnx

    if precision not in VISION_PRECISIONS:
        raise UserError(f"unknown vision precision {precision!r}; valid: {', '.join(VISION_PRECISIONS)}")
    if precision == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # MatMul weights only: the ViT's and projector's matrices carry the cost; convolutions stay fp32.
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul", "Gemm"])
    elif precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
        onnx.save(model, str(dst))
    else:
        onnx.save(onnx.load(str(src)), str(dst))
    return Path(dst)
