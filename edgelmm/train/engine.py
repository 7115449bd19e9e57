"""The training engine: the Hugging Face Trainer, with what edgelmm needs on top.

- Checkpoints are marked complete only after everything in them is written (an atomic marker file),
  and resuming takes the newest complete one: a kill at any moment leaves the last good one usable.
- A non-finite loss, or non-finite weights about to be checkpointed, stop training with a message.
- Losses go to `log.jsonl` in the run folder (and TensorBoard when it is installed).
- Resuming restores weights, optimizer, scheduler, RNG state and the position in the data order.
Multi-GPU and multi-node runs go through `torchrun` / `accelerate launch`, which the Trainer detects.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
from pathlib import Path

import torch
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

from edgelmm.errors import UserError
from edgelmm.fsutil import atomic_write_text
from edgelmm.train.stages import Hyper

COMPLETE_MARKER = "edgelmm-complete"
KEEP_CHECKPOINTS = 2


class TrainingDiverged(UserError):
    """The loss or the weights stopped being finite."""


def is_main_process() -> bool:
    """False in the worker processes of a torchrun / accelerate launch run (they have RANK > 0)."""
    return int(os.environ.get("RANK", "0")) == 0


def complete_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints in a run folder, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.glob("checkpoint-*") if (p / COMPLETE_MARKER).is_file()]
    return sorted(found, key=lambda p: int(p.name.rsplit("-", 1)[1]))


class EdgeTrainer(Trainer):
    def __init__(self, *args, vision_lr_scale: float = 1.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.vision_lr_scale = vision_lr_scale

    def create_optimizer(self, model=None):
        """The Trainer's optimizer, with the vision tower's parameters in groups of their own at
        `vision_lr_scale` times the learning rate (the scheduler then scales each group alike)."""
        optimizer = super().create_optimizer(model)
        if self.vision_lr_scale != 1.0:
            tower = {id(p) for name, p in (model or self.model).named_parameters() if "vision_tower." in name}
            groups = [{**group, "params": params, "lr": group["lr"] * (self.vision_lr_scale if in_tower else 1.0)}
                      for group in optimizer.param_groups for in_tower in (False, True)
                      if (params := [p for p in group["params"] if (id(p) in tower) == in_tower])]
            optimizer.param_groups.clear()  # nothing has stepped yet, so there is no state to keep
            for group in groups:
                optimizer.add_param_group(group)
        return optimizer

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not torch.isfinite(loss).all():
            raise TrainingDiverged(f"training stopped: the loss became {loss.item()} at step "
                                   f"{self.state.global_step + 1}; the last complete checkpoint is kept "
                                   "(lower the learning rate and resume)")
        return loss

    def _save_checkpoint(self, model, trial):
        bad = [n for n, p in model.named_parameters() if p.requires_grad and not torch.isfinite(p).all()]
        if bad:
            raise TrainingDiverged(f"training stopped at step {self.state.global_step}: weights became "
                                   f"non-finite ({bad[0]}); the last complete checkpoint is kept")
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
            atomic_write_text(folder / COMPLETE_MARKER, f"{self.state.global_step}\n")
            for old in complete_checkpoints(self.args.output_dir)[:-KEEP_CHECKPOINTS]:
                shutil.rmtree(old, ignore_errors=True)


class JsonlLog(TrainerCallback):
    """Appends every log record (loss, learning rate, grad norm) as one JSON line."""

    def __init__(self, path: Path, resume_step: int = 0) -> None:
        self.path = path
        if path.exists():  # a resumed run rewrites the steps after its checkpoint
            kept = [line for line in path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            atomic_write_text(path, "".join(line + "\n" for line in kept))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            with self.path.open("a") as f:
                f.write(json.dumps({"step": state.global_step, "epoch": state.epoch, **logs}) + "\n")


def training_arguments(run_dir: Path, hyper: Hyper, n_samples: int, *, seed: int, save_every: int | None,
                       progress: bool, deepspeed: str | None = None) -> TrainingArguments:
    world = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun / accelerate launch
    steps_per_epoch = max(math.ceil(n_samples / (hyper.batch_size * hyper.grad_accum * world)), 1)
    total = max(math.ceil(steps_per_epoch * hyper.epochs), 1)
    cuda = torch.cuda.is_available()
    return TrainingArguments(
        output_dir=str(run_dir),
        per_device_train_batch_size=hyper.batch_size,
        gradient_accumulation_steps=hyper.grad_accum,
        learning_rate=hyper.lr,
        num_train_epochs=hyper.epochs,
        warmup_steps=hyper.warmup,
        weight_decay=hyper.weight_decay,
        lr_scheduler_type=hyper.scheduler,
        max_grad_norm=1.0,
        logging_steps=max(1, min(25, total // 20)),
        logging_first_step=True,
        save_strategy="steps",
        save_steps=save_every or max(1, total // 10),
        save_total_limit=None,  # EdgeTrainer prunes, and only complete checkpoints
        seed=seed,
        data_seed=seed,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        fp16=cuda and not torch.cuda.is_bf16_supported(),
        use_cpu=not cuda,
        ddp_backend="gloo" if world > 1 and not cuda else None,
        ddp_find_unused_parameters=False,
        remove_unused_columns=False,
        report_to=["tensorboard"] if importlib.util.find_spec("tensorboard") else "none",
        disable_tqdm=not progress,
        dataloader_drop_last=False,
        deepspeed=deepspeed,  # a ZeRO config file (edgelmm/train/configs) for real-scale multi-GPU runs
    )


def run_training(model, dataset, collator, hyper: Hyper, run_dir: str | Path, *, seed: int = 0,
                 resume: bool = False, save_every: int | None = None, progress: bool = True,
                 deepspeed: str | None = None) -> dict:
    """Train `model` in place; returns the final training metrics. `resume` continues from the newest
    complete checkpoint in `run_dir` (a fresh start when there is none)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoints = complete_checkpoints(run_dir)
    if is_main_process():  # folders of a checkpoint cut short by a kill are debris
        for partial in set(run_dir.glob("checkpoint-*")) - set(checkpoints):
            shutil.rmtree(partial, ignore_errors=True)
    if checkpoints and not resume:
        raise UserError(f"{run_dir} holds checkpoints of an earlier run; resume it with --resume or choose "
                        "another output folder")
    resume_from = str(checkpoints[-1]) if resume and checkpoints else None
    resume_step = int(checkpoints[-1].name.rsplit("-", 1)[1]) if resume_from else 0
    args = training_arguments(run_dir, hyper, len(dataset), seed=seed, save_every=save_every, progress=progress,
                              deepspeed=deepspeed)
    trainer = EdgeTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                          callbacks=[JsonlLog(run_dir / "log.jsonl", resume_step)],
                          vision_lr_scale=hyper.vision_lr_scale)
    if not progress:  # without a progress bar the Trainer would print every log record instead
        trainer.remove_callback(PrinterCallback)
    result = trainer.train(resume_from_checkpoint=resume_from)
    return dict(result.metrics)
