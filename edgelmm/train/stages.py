"""The training stages, described as data.

Each stage says which parts of the model learn, from which data file, what it needs from earlier
stages and what it provides; its hyperparameters default to LLaVA-1.5's real-scale values and a preset
may tune them (see `Preset.training`). One engine runs them all.

    stage     learns                        data           needs           provides
    clip      vision tower (+ text encoder) stage1.json    -               vision
    lm        language model                stage1+2 text  -               lm
    align     projector                     stage1.json    vision, lm      projector
    instruct  projector + language model    stage2.json    projector       instruct
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from edgelmm.registry import Registry

# What the stages train, by name; `edgelmm.train.freeze` maps them to modules.
VISION, PROJECTOR, LANGUAGE = "vision_tower", "projector", "language_model"


@dataclass(frozen=True)
class Hyper:
    """Optimisation settings of one stage."""

    lr: float
    epochs: float
    batch_size: int  # per device, before gradient accumulation
    grad_accum: int = 1
    warmup: float = 0.03  # fraction of the steps
    weight_decay: float = 0.0
    scheduler: str = "cosine"
    max_length: int = 2048
    # The vision tower's learning rate relative to `lr`, when a stage tunes it beside other parts: a
    # tower tuned at the language model's rate forgets what it learned before.
    vision_lr_scale: float = 1.0
    # clip: weight of the loss that makes each patch of the feature layer name its own row and column.
    position_loss: float = 0.0
    # clip: weight of the loss that makes each patch of the feature layer name the object it lies on.
    dense_loss: float = 0.0


@dataclass(frozen=True)
class Stage:
    name: str
    kind: str  # "clip" (contrastive), "lm" (text only), "llava" (image + text)
    trains: tuple[str, ...]
    data: tuple[str, ...]  # files inside the data folder
    needs: tuple[str, ...]  # what earlier stages must have provided
    provides: str
    hyper: Hyper
    from_scratch_only: bool = False

    def with_hyper(self, **changes) -> Stage:
        return replace(self, hyper=replace(self.hyper, **changes))


STAGES: Registry[Stage] = Registry("training stage")

STAGES.add("clip", Stage(
    "clip", "clip", (VISION,), ("stage1.json",), (), "vision",
    # CLIP trained with batch 32K and lr 5e-4; small-scale defaults, tuned per preset.
    Hyper(lr=5e-4, epochs=5, batch_size=256, weight_decay=0.1), from_scratch_only=True))
STAGES.add("lm", Stage(
    "lm", "lm", (LANGUAGE,), ("stage1.json", "stage2.json"), (), "lm",
    Hyper(lr=3e-4, epochs=1, batch_size=64, weight_decay=0.1), from_scratch_only=True))
STAGES.add("align", Stage(
    "align", "llava", (PROJECTOR,), ("stage1.json",), ("vision", "lm"), "projector",
    Hyper(lr=1e-3, epochs=1, batch_size=32, grad_accum=8)))  # LLaVA-1.5: 558K pairs, batch 256, lr 1e-3
STAGES.add("instruct", Stage(
    "instruct", "llava", (PROJECTOR, LANGUAGE), ("stage2.json",), ("projector",), "instruct",
    Hyper(lr=2e-5, epochs=1, batch_size=16, grad_accum=8)))  # LLaVA-1.5: 665K mix, batch 128, lr 2e-5

RECIPE_FROM_SCRATCH = ("clip", "lm", "align", "instruct")


def stage_for(name: str, preset=None) -> Stage:
    """The stage with the preset's tuning applied: hyperparameters, and `trains` where it differs."""
    stage = STAGES.get(name)
    tuned = dict((preset.training or {}).get(name, {})) if preset is not None else {}
    trains = tuned.pop("trains", None)
    if trains is not None:
        stage = replace(stage, trains=tuple(trains))
    return stage.with_hyper(**tuned) if tuned else stage
