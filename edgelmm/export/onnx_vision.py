"""Vision tower + projector as one ONNX graph: pixel_values (B, 3, H, W) -> image embeddings (B, N, D_lm).

The graph computes exactly the features the language model sees: the configured feature layer, CLS
handling and projector. Layers past the feature layer never influence the output, so they are cut
before export: LLaVA-1.5 reads the second-to-last layer, and the last layer would be wasted work.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path

import torch

from edgelmm.modeling.vision_encoder import VisionEncoder

OPSET = 18
INPUT_NAME, OUTPUT_NAME, IMPORTANCE_NAME = "pixel_values", "image_embeds", "image_importance"


@contextlib.contextmanager
def _exporter_quiet():
    """The exporter reports skipped torchvision ops and deprecations that concern its own internals."""
    torch_onnx_log = logging.getLogger("torch.onnx")
    level = torch_onnx_log.level
    torch_onnx_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        torch_onnx_log.setLevel(level)


def export_vision_onnx(model, path: str | Path, image_size: int, importance: bool = False) -> Path:
    """Write the vision encoder of `model` to `path` (dynamic batch); large graphs get external data.
    With `importance`, the graph also returns each image token's importance (B, N) as a second output."""
    path = Path(path)
    encoder = VisionEncoder(model, importance=importance).eval()
    example = torch.zeros(2, 3, image_size, image_size)
    n_bytes = sum(p.numel() * p.element_size() for p in encoder.parameters())
    batch = torch.export.Dim("batch", min=1, max=1024)
    with torch.no_grad(), _exporter_quiet():
        program = torch.onnx.export(encoder, (example,), dynamo=True, opset_version=OPSET,
                                    input_names=[INPUT_NAME],
                                    output_names=[OUTPUT_NAME, IMPORTANCE_NAME] if importance else [OUTPUT_NAME],
                                    dynamic_shapes={"pixel_values": {0: batch}}, verbose=False)
    program.save(str(path), external_data=n_bytes > 1_500_000_000)  # protobuf stops at 2 GB
    return path
