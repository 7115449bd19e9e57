"""What a vision tower's patch features say about each object: linear probes on EdgeScenes.

For every object of the first N scenes, the features of the layer the language model reads are taken
at the patch under the object's centre and averaged over the patches in its box; a linear classifier
trained on three quarters of the objects then names the shape and the colour of the rest. A language
model can only find "the circle" by attention if the patches say "circle" in a form this simple. The
same probes name the object's column and row (in thirds of the image): whether a patch says where it
is, which is what a question like "Is the red star to the left of the blue circle?" needs.

    python scripts/probe_tower.py CHECKPOINT EDGESCENES_DIR [--n-images 500]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from edgelmm.data.edgescenes.world import CANVAS, COLORS, SHAPES
from edgelmm.imaging import preprocess
from edgelmm.modeling import load_checkpoint
from edgelmm.train.clip import box_mask

TRAIN_FRACTION = 0.75  # of the objects, in scene order; the probes are scored on the rest


@torch.no_grad()
def object_features(checkpoint: str, data: Path, n_images: int):
    """(centre-patch features, box-mean features, {label name: labels}, is-small) per object."""
    parts = load_checkpoint(checkpoint)
    model = parts.model.eval()
    config = model.config
    tower = model.model.vision_tower
    grid = config.vision_config.image_size // config.vision_config.patch_size
    scenes = json.loads((data / "scenes.json").read_text())["images"][:n_images]
    centre, mean, small = [], [], []
    labels = {"shape": [], "colour": [], "column": [], "row": []}
    for start in range(0, len(scenes), 50):
        chunk = scenes[start:start + 50]
        pixels = torch.stack([torch.from_numpy(preprocess(data / "images" / s["image"], parts.image_spec))
                              for s in chunk])
        hidden = tower(pixel_values=pixels, output_hidden_states=True).hidden_states[config.vision_feature_layer]
        patches = hidden[:, 1:]  # CLS dropped, as the projector sees them
        for b, scene in enumerate(chunk):
            for obj in scene["objects"]:
                mask = box_mask([v / CANVAS for v in obj["bbox"]], grid)
                col, row = (min(int(c / CANVAS * grid), grid - 1) for c in obj["center"])
                centre.append(patches[b, row * grid + col])
                mean.append((patches[b] * mask[:, None]).sum(0) / mask.sum())
                labels["shape"].append(SHAPES.index(obj["shape"]))
                labels["colour"].append(list(COLORS).index(obj["color"]))
                labels["column"].append(min(int(obj["center"][0] / CANVAS * 3), 2))
                labels["row"].append(min(int(obj["center"][1] / CANVAS * 3), 2))
                small.append(obj["size"] == "small")
    return (torch.stack(centre), torch.stack(mean), {k: torch.tensor(v) for k, v in labels.items()},
            torch.tensor(small))


def probe(features: torch.Tensor, labels: torch.Tensor, n_classes: int, steps: int = 300) -> torch.Tensor:
    """Held-out correctness (one bool per object in the last quarter) of a linear classifier."""
    torch.manual_seed(0)
    x = (features - features.mean(0)) / (features.std(0) + 1e-6)
    split = int(len(x) * TRAIN_FRACTION)
    linear = torch.nn.Linear(x.shape[1], n_classes)
    optimizer = torch.optim.Adam(linear.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(linear(x[:split]), labels[:split])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return linear(x[split:]).argmax(-1) == labels[split:]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("data", type=Path, help="an EdgeScenes folder (scenes.json, images/)")
    parser.add_argument("--n-images", type=int, default=500)
    args = parser.parse_args(argv)
    centre, mean, labels, small = object_features(args.checkpoint, args.data, args.n_images)
    held_out_small = small[int(len(small) * TRAIN_FRACTION):]
    print(f"{len(small)} objects; accuracy on the held-out quarter")
    for where, features in (("centre patch", centre), ("box mean", mean)):
        for what, truth in labels.items():
            ok = probe(features, truth, int(truth.max()) + 1).float()
            print(f"  {what:6} from the {where:12}  {ok.mean():.3f}  "
                  f"(small {ok[held_out_small].mean():.3f}, large {ok[~held_out_small].mean():.3f})")


if __name__ == "__main__":
    main()
