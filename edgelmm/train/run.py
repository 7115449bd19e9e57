"""Running a training stage, and the whole recipe, from a preset or a checkpoint to a checkpoint.

A stage's output folder holds `run/` (the Trainer's checkpoints and `log.jsonl`), `model/` (the
finished checkpoint, written atomically: its presence means the stage is done) and `stage.json`
(what ran, how long, final metrics). `run_recipe` chains the stages of a preset in one folder, skipping
finished stages and resuming an interrupted one.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from edgelmm.errors import ConfigError, DataError, UserError
from edgelmm.fsutil import atomic_write_text
from edgelmm.modeling import ModelParts, build_model, load_checkpoint, save_checkpoint
from edgelmm.modeling.config import edgelmm_fields, record_stage
from edgelmm.presets import get_preset
from edgelmm.train.engine import complete_checkpoints, is_main_process, run_training
from edgelmm.train.freeze import set_trainable
from edgelmm.train.stages import RECIPE_FROM_SCRATCH, VISION, Stage, stage_for


@dataclass
class TrainOptions:
    seed: int = 0
    resume: bool = False
    lora: bool = False  # instruct: LoRA adapters on the LM instead of full tuning
    unfreeze_vision: bool = False  # instruct: the vision tower learns too
    save_every: int | None = None  # steps between checkpoints (default: a tenth of the run)
    limit: int | None = None  # use only the first N records (smoke runs, tests)
    skip_bad: bool = False
    image_folder: str | None = None
    progress: bool = True
    overrides: dict | None = None  # hyperparameters to change (lr, epochs, batch_size, ...)
    deepspeed: str | None = None  # DeepSpeed config file (multi-GPU, real scale)

    def engine_kwargs(self) -> dict:
        return {"seed": self.seed, "resume": self.resume, "save_every": self.save_every,
                "progress": self.progress, "deepspeed": self.deepspeed}


# ---- data locations ------------------------------------------------------------------------------

def stage_files(stage: Stage, data: str | Path, image_folder: str | None) -> tuple[list[Path], Path]:
    """The data files and image folder of a stage: a data folder (EdgeScenes layout) or one JSON file."""
    data = Path(data)
    if data.is_dir():
        files = [data / name for name in stage.data]
        folder = Path(image_folder) if image_folder else data / "images"
    else:
        files = [data]
        folder = Path(image_folder) if image_folder else data.parent / "images"
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DataError(f"stage {stage.name} needs data files that are missing: {', '.join(missing)}")
    return files, folder


# ---- starting points -----------------------------------------------------------------------------

def fresh_model(preset_name: str, data: str | Path, out: Path, seed: int) -> ModelParts:
    """A preset built from scratch, with a BPE tokenizer trained on the data's text (kept in `out`)."""
    from transformers import AutoTokenizer

    from edgelmm.data.text import corpus
    from edgelmm.tokenizer import train_tokenizer

    preset = get_preset(preset_name)
    tok_dir = out / "tokenizer"
    if tok_dir.is_dir():  # a resumed run keeps the tokenizer it started with
        tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    else:
        data = Path(data)
        files = [data / n for n in ("stage1.json", "stage2.json") if (data / n).is_file()] if data.is_dir() else [data]
        if not files:
            raise DataError(f"no stage1.json or stage2.json in {data} to train a tokenizer on")
        tokenizer = train_tokenizer(corpus(files), vocab_size=preset.lm["vocab_size"])  # deterministic
        if is_main_process():
            tokenizer.save_pretrained(tok_dir)
    torch.manual_seed(seed)
    return build_model(preset_name, tokenizer=tokenizer)


def starting_point(preset: str | None, model: str | None, data, out: Path, seed: int) -> ModelParts:
    if model is None:
        if preset is None:
            raise ConfigError("give --preset (start from scratch) or --model (a checkpoint)")
        return fresh_model(preset, data, out, seed)
    parts = load_checkpoint(model)
    recorded = edgelmm_fields(parts.model.config).preset
    if preset is not None and recorded != preset:
        raise ConfigError(f"checkpoint {model} is of preset {recorded!r}, not {preset!r}")
    return parts


def check_prerequisites(stage: Stage, parts: ModelParts) -> None:
    trained = set(edgelmm_fields(parts.model.config).trained)
    missing = [need for need in stage.needs if need not in trained]
    if missing:
        providers = [s for s in RECIPE_FROM_SCRATCH if stage_for(s).provides in missing]
        raise ConfigError(f"stage {stage.name} needs a model whose {', '.join(missing)} "
                          f"{'is' if len(missing) == 1 else 'are'} trained: run stage "
                          f"{' and '.join(providers)} first (or build from pretrained parts)")


# ---- the stages ----------------------------------------------------------------------------------

def _train_clip(parts: ModelParts, stage: Stage, files, folder, run_dir: Path, opts: TrainOptions) -> dict:
    from edgelmm.train.clip import CaptionCollator, CaptionPairs, ContrastivePair

    config = parts.model.config
    grid = config.vision_config.image_size // config.vision_config.patch_size
    records = CaptionPairs.from_file(files[0], folder, parts.tokenizer, parts.image_spec).records[: opts.limit or None]
    held_out = max(1, len(records) // 20)  # the zero-shot check uses images the tower never saw
    train = CaptionPairs(records[:-held_out], folder, parts.tokenizer, parts.image_spec, grid)
    if stage.hyper.dense_loss:
        train.phrases = train.region_phrases()
        if not train.phrases:
            raise DataError(f"{files[0]}: the dense loss needs records with regions (EdgeScenes writes them)")
    check = records[-held_out:]
    torch.manual_seed(opts.seed)
    pair = ContrastivePair(parts.model.model.vision_tower, len(parts.tokenizer), parts.tokenizer.pad_token_id,
                           feature_layer=layer if isinstance(layer := config.vision_feature_layer, int) else -2,
                           position_loss=stage.hyper.position_loss, dense_loss=stage.hyper.dense_loss,
                           dense_classes=len(train.phrases))
    metrics = run_training(pair, train, CaptionCollator(parts.tokenizer.pad_token_id), stage.hyper, run_dir,
                           **opts.engine_kwargs())
    metrics["zero_shot_accuracy"] = zero_shot_check(pair, parts, check, folder)
    return metrics


def zero_shot_check(pair, parts: ModelParts, records: list[dict], folder: Path) -> float | None:
    """Zero-shot colour-shape classification of held-out EdgeScenes images (None without scenes.json)."""
    from edgelmm.data.edgescenes.world import COLORS, SHAPES
    from edgelmm.imaging import preprocess
    from edgelmm.train.clip import zero_shot_accuracy

    scenes_file = folder.parent / "scenes.json"
    if not scenes_file.is_file():
        return None
    scenes = {s["image"]: s for s in json.loads(scenes_file.read_text())["images"]}
    records = [r for r in records if r["image"] in scenes]
    images = [torch.from_numpy(preprocess(folder / r["image"], parts.image_spec)) for r in records]
    truths = [{f"{o['color']} {o['shape']}" for o in scenes[r["image"]]["objects"]} for r in records]
    return zero_shot_accuracy(pair, parts.tokenizer, [f"{c} {s}" for c in COLORS for s in SHAPES], images, truths)


def _train_lm(parts: ModelParts, stage: Stage, files, folder, run_dir: Path, opts: TrainOptions) -> dict:
    from edgelmm.data.llava import LlavaCollator, read_records
    from edgelmm.data.text import ChatTextDataset

    records = [r for f in files for r in read_records(f)][: opts.limit or None]
    dataset = ChatTextDataset(records, parts.tokenizer, stage.hyper.max_length)
    set_trainable(parts.model, stage.trains)
    return run_training(parts.model, dataset, LlavaCollator(parts.tokenizer.pad_token_id), stage.hyper, run_dir,
                        **opts.engine_kwargs())


LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|qkv_proj|gate_proj|up_proj|down_proj|gate_up_proj)"


def _train_llava(parts: ModelParts, stage: Stage, files, folder, run_dir: Path, opts: TrainOptions) -> dict:
    from edgelmm.data.llava import LlavaCollator, LlavaDataset

    datasets = [LlavaDataset(f, folder, parts.tokenizer, parts.image_spec, parts.num_image_tokens,
                             max_length=stage.hyper.max_length, skip_bad=opts.skip_bad) for f in files]
    dataset = torch.utils.data.ConcatDataset(datasets)
    if opts.limit:
        dataset = torch.utils.data.Subset(dataset, range(min(opts.limit, len(dataset))))
    model = parts.model
    set_trainable(model, stage.trains)
    if opts.lora:
        model = with_lora(model, stage)
    metrics = run_training(model, dataset, LlavaCollator(parts.tokenizer.pad_token_id), stage.hyper, run_dir,
                           **opts.engine_kwargs())
    if opts.lora:
        parts.model = model.merge_and_unload()  # the checkpoint carries plain weights
    metrics["skipped_records"] = sum(sum(d.skipped.values()) for d in datasets)
    return metrics


def with_lora(model, stage: Stage):
    """LoRA adapters on the LM's linear layers; the stage's other parts keep training in full."""
    from peft import LoraConfig, get_peft_model

    keep = ["multi_modal_projector"] + (["vision_tower"] if VISION in stage.trains else [])
    config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=LORA_TARGETS, modules_to_save=keep)
    return get_peft_model(model, config)


TRAINERS = {"clip": _train_clip, "lm": _train_lm, "llava": _train_llava}


def stage_done(out: str | Path) -> bool:
    return (Path(out) / "model" / "config.json").is_file()


def run_stage(name: str, *, data: str | Path, out: str | Path, preset: str | None = None,
              model: str | None = None, options: TrainOptions | None = None) -> Path:
    """Run one stage; returns the finished checkpoint folder (`out/model`)."""
    opts = options or TrainOptions()
    out = Path(out)
    if stage_done(out):
        raise UserError(f"stage output {out} is already finished; choose another --out")
    if not opts.resume and complete_checkpoints(out / "run"):
        raise UserError(f"{out} holds an interrupted run; continue it with --resume")
    out.mkdir(parents=True, exist_ok=True)
    stage = stage_for(name)  # the data files a stage reads do not depend on the preset
    files, folder = stage_files(stage, data, opts.image_folder)
    parts = starting_point(preset, model, data, out, opts.seed)
    stage = stage_for(name, _preset_of(parts))
    if opts.unfreeze_vision and VISION not in stage.trains:
        stage = replace(stage, trains=(*stage.trains, VISION))
    if opts.overrides:
        stage = stage.with_hyper(**opts.overrides)
    check_prerequisites(stage, parts)

    started = time.time()
    metrics = TRAINERS[stage.kind](parts, stage, files, folder, out / "run", opts)
    seconds = time.time() - started
    if not is_main_process():  # under torchrun / accelerate launch, one process writes the result
        return out / "model"
    config = parts.model.config
    record_stage(config, stage.name, stage.provides)
    save_checkpoint(parts, out / "model")
    summary = {"stage": stage.name, "preset": edgelmm_fields(config).preset, "trains": list(stage.trains),
               "hyper": stage.hyper.__dict__, "lora": opts.lora, "seconds": round(seconds, 1),
               "metrics": metrics, "data": [str(f) for f in files]}
    atomic_write_text(out / "stage.json", json.dumps(summary, indent=2))
    return out / "model"


def _preset_of(parts: ModelParts):
    name = edgelmm_fields(parts.model.config).preset
    try:
        return get_preset(name) if name else None
    except UserError:
        return None


def run_recipe(preset: str, *, data: str | Path, out: str | Path, options: TrainOptions | None = None,
               stages: tuple[str, ...] = RECIPE_FROM_SCRATCH, log=print) -> Path:
    """Every stage of the recipe in order under `out/<stage>`; finished stages are skipped and an
    interrupted one resumes. Returns the final checkpoint folder."""
    opts = options or TrainOptions()
    out = Path(out)
    get_preset(preset)
    out.mkdir(parents=True, exist_ok=True)
    recipe_file = out / "recipe.json"
    if recipe_file.is_file():
        recorded = json.loads(recipe_file.read_text())
        if recorded["preset"] != preset:
            raise ConfigError(f"{out} holds a recipe of preset {recorded['preset']!r}, not {preset!r}")
    else:
        atomic_write_text(recipe_file, json.dumps({"preset": preset, "data": str(data), "stages": list(stages)}))
    previous = None
    for name in stages:
        stage_out = out / name
        if stage_done(stage_out):
            log(f"stage {name}: already finished, skipped")
        else:
            resume = bool(complete_checkpoints(stage_out / "run"))
            log(f"stage {name}: {'resuming' if resume else 'starting'}")
            run_stage(name, data=data, out=stage_out, preset=preset if previous is None else None,
                      model=None if previous is None else str(previous), options=replace(opts, resume=resume))
            summary = json.loads((stage_out / "stage.json").read_text())
            log(f"stage {name}: done in {summary['seconds']:.0f} s")
        previous = stage_out / "model"
    return previous


__all__ = ["TrainOptions", "run_stage", "run_recipe"]
