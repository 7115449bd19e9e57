"""Training stages on the tiny preset: what learns, loss, resume after kill -9, DDP, faults."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from edgelmm.errors import ConfigError, DataError
from edgelmm.modeling import build_model, load_checkpoint, save_checkpoint
from edgelmm.train.engine import EdgeTrainer, TrainingDiverged, complete_checkpoints, training_arguments
from edgelmm.train.freeze import set_trainable
from edgelmm.train.run import TrainOptions, run_stage
from edgelmm.train.stages import STAGES, stage_for
from edgelmm.presets import get_preset


@pytest.fixture(scope="module")
def aligned_start(tmp_path_factory):
    """A tiny checkpoint whose tower and LM count as trained, so align (and more) may start from it."""
    torch.manual_seed(0)
    parts = build_model("tiny")
    parts.model.config.edgelmm_trained = ["vision", "lm"]
    return save_checkpoint(parts, tmp_path_factory.mktemp("start") / "ckpt")


def quiet(**kw):
    return TrainOptions(progress=False, **kw)


def grads_by_part(model):
    parts = {"vision": model.model.vision_tower, "projector": model.model.multi_modal_projector,
             "lm": model.model.language_model}
    return {name: any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())
            for name, m in parts.items()}


@pytest.mark.parametrize("name,expected", [
    ("lm", {"vision": False, "projector": False, "lm": True}),
    ("align", {"vision": False, "projector": True, "lm": False}),
    ("instruct", {"vision": False, "projector": True, "lm": True}),
])
def test_each_stage_trains_exactly_its_parts(name, expected, tiny, scenes_dir):
    from edgelmm.data.llava import LlavaCollator, LlavaDataset

    model = tiny.model
    set_trainable(model, STAGES.get(name).trains)
    ds = LlavaDataset(scenes_dir / "stage2.json", scenes_dir / "images", tiny.tokenizer, tiny.image_spec,
                      tiny.num_image_tokens)
    batch = LlavaCollator(tiny.tokenizer.pad_token_id)([ds[0], ds[1]])
    model.zero_grad()
    model(**batch).loss.backward()
    assert grads_by_part(model) == expected
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == trainable
    model.zero_grad()
    model.requires_grad_(True)


def test_instruct_with_lora_trains_adapters_and_projector_only(tiny, scenes_dir):
    from edgelmm.data.llava import LlavaCollator, LlavaDataset
    from edgelmm.train.run import with_lora

    parts = build_model("tiny")
    stage = STAGES.get("instruct")
    set_trainable(parts.model, stage.trains)
    peft_model = with_lora(parts.model, stage)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "multi_modal_projector" in n for n in trainable)
    assert any("language_model" in n and "lora_" in n for n in trainable)
    assert not any("vision_tower" in n for n in trainable)
    ds = LlavaDataset(scenes_dir / "stage2.json", scenes_dir / "images", parts.tokenizer, parts.image_spec,
                      parts.num_image_tokens)
    peft_model(**LlavaCollator(parts.tokenizer.pad_token_id)([ds[0]])).loss.backward()
    assert all(p.grad is not None for n, p in peft_model.named_parameters() if p.requires_grad)
    merged = peft_model.merge_and_unload()
    assert not any("lora_" in n for n, _ in merged.named_parameters())


def test_clip_stage_trains_only_the_tower_and_reports_zero_shot(tmp_path, scenes_dir):
    out = run_stage("clip", preset="tiny", data=scenes_dir, out=tmp_path / "clip", options=quiet(limit=48))
    summary = json.loads((tmp_path / "clip" / "stage.json").read_text())
    assert 0.0 <= summary["metrics"]["zero_shot_accuracy"] <= 1.0
    torch.manual_seed(0)
    untrained = build_model("tiny", tokenizer=load_checkpoint(out).tokenizer).model.state_dict()  # same start
    trained = load_checkpoint(out).model.state_dict()
    changed = {k.split(".")[1] for k, v in trained.items() if not torch.equal(v, untrained[k])}
    assert changed == {"vision_tower"}  # the projector and LM are new, never trained here
    config = json.loads((out / "config.json").read_text())
    assert config["edgelmm_trained"] == ["vision"] and config["edgelmm_stages"] == ["clip"]


@pytest.mark.parametrize("name", ["lm", "instruct"])
def test_loss_falls_on_tiny(name, tmp_path, scenes_dir):
    torch.manual_seed(0)
    parts = build_model("tiny")
    parts.model.config.edgelmm_trained = ["vision", "lm", "projector"]
    start = save_checkpoint(parts, tmp_path / "start")
    opts = quiet(limit=16, overrides={"epochs": 6, "batch_size": 4, "lr": 3e-3})
    run_stage(name, model=str(start), data=scenes_dir, out=tmp_path / name, options=opts)
    log = (tmp_path / name / "run" / "log.jsonl").read_text().splitlines()
    losses = [r["loss"] for r in map(json.loads, log) if "loss" in r]
    assert len(losses) >= 6 and sum(losses[-3:]) / 3 < 0.7 * losses[0]


def test_zero_shot_classifier_on_fixed_inputs():
    from edgelmm.tokenizer import train_tokenizer
    from edgelmm.train.clip import ContrastivePair, zero_shot_accuracy

    tok = train_tokenizer(["a photo of a red circle", "a photo of a blue star"] * 20, 300)
    tower = build_model("tiny").model.model.vision_tower
    pair = ContrastivePair(tower, len(tok), tok.pad_token_id)
    images = [torch.full((3, 32, 32), 1.0), torch.full((3, 32, 32), -1.0)]
    # Make the classifier's choice known: both images embed identically, so both get the same label.
    acc_all = zero_shot_accuracy(pair, tok, ["red circle", "blue star"], images, [{"red circle", "blue star"}] * 2)
    assert acc_all == 1.0
    acc_none = zero_shot_accuracy(pair, tok, ["red circle", "blue star"], images, [set(), set()])
    assert acc_none == 0.0


def test_region_masks_cover_the_patches_under_each_box():
    from edgelmm.train.clip import box_mask

    mask = box_mask([0.0, 0.0, 0.5, 0.25], 4).view(4, 4)  # patch centres at 1/8, 3/8, 5/8, 7/8
    assert mask.tolist() == [[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    tiny_box = box_mask([0.80, 0.55, 0.84, 0.60], 4).view(4, 4)  # no centre inside: the patch under its centre
    assert tiny_box.sum() == 1 and tiny_box[2, 3] == 1


def test_region_and_negative_losses_reach_the_patch_features(scenes_dir):
    from edgelmm.train.clip import CaptionCollator, CaptionPairs, ContrastivePair

    torch.manual_seed(0)
    parts = build_model("tiny")
    vision = parts.model.config.vision_config
    pairs = CaptionPairs.from_file(scenes_dir / "stage1.json", scenes_dir / "images", parts.tokenizer,
                                   parts.image_spec, grid=vision.image_size // vision.patch_size)
    batch = CaptionCollator(parts.tokenizer.pad_token_id)([pairs[i] for i in range(6)])
    n_regions = sum(len(r["regions"]) for r in pairs.records[:6])
    assert batch["region_masks"].shape == (n_regions, (vision.image_size // vision.patch_size) ** 2)
    assert batch["negative_ids"].shape[0] == 18 and len(batch["phrase_ids"]) == len(set(batch["region_phrase"].tolist()))
    pair = ContrastivePair(parts.model.model.vision_tower, len(parts.tokenizer), parts.tokenizer.pad_token_id)
    pair(**batch)["loss"].backward()
    assert pair.region_projection.weight.grad.abs().sum() > 0
    # The region loss trains the layer the LLaVA model reads (-2), which the global loss reaches too.
    assert parts.model.model.vision_tower.encoder.layers[0].mlp.fc1.weight.grad.abs().sum() > 0


def test_position_loss_teaches_the_feature_layer_where_each_patch_is(scenes_dir):
    from edgelmm.train.clip import CaptionCollator, CaptionPairs, ContrastivePair

    torch.manual_seed(0)
    parts = build_model("tiny")
    pairs = CaptionPairs.from_file(scenes_dir / "stage1.json", scenes_dir / "images", parts.tokenizer, parts.image_spec)
    batch = CaptionCollator(parts.tokenizer.pad_token_id)([pairs[i] for i in range(8)])
    plain = ContrastivePair(parts.model.model.vision_tower, len(parts.tokenizer), parts.tokenizer.pad_token_id)
    assert plain.position_head is None
    pair = ContrastivePair(parts.model.model.vision_tower, len(parts.tokenizer), parts.tokenizer.pad_token_id,
                           position_loss=1.0)
    grid = pair.grid
    optimizer = torch.optim.Adam([p for n, p in pair.named_parameters() if not n.startswith("text")], lr=3e-3)

    def named_right(images) -> float:  # share of patches whose row and column the head names
        with torch.no_grad():
            patches = pair._embed_images(images)[1]
            guess = pair.position_head(patches).view(len(images), grid * grid, 2, grid).argmax(-1)
        index = torch.arange(grid * grid)
        return (guess == torch.stack([index // grid, index % grid], -1)).all(-1).float().mean().item()

    held_out = torch.stack([pairs[i]["pixel_values"] for i in range(8, 12)])
    before = named_right(held_out)
    for _ in range(150):
        loss = pair.patch_position_loss(pair._embed_images(batch["pixel_values"])[1])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert parts.model.model.vision_tower.encoder.layers[0].mlp.fc1.weight.grad.abs().sum() > 0
    # On images it never saw (chance: 1 in 16), so the patches carry positions, not memorised contents.
    assert before < 0.3 and named_right(held_out) > 0.6
    with torch.no_grad():  # the stage's loss holds the position term at its weight
        pair.position_loss = 0.0
        without = pair(**batch)["loss"]
        pair.position_loss = 2.0
        term = pair.patch_position_loss(pair._embed_images(batch["pixel_values"])[1])
        assert pair(**batch)["loss"].item() == pytest.approx((without + 2 * term).item(), rel=1e-5)


def test_dense_loss_labels_each_patch_with_the_object_under_it(scenes_dir):
    from edgelmm.train.clip import CaptionCollator, CaptionPairs, ContrastivePair, box_mask

    torch.manual_seed(0)
    parts = build_model("tiny")
    pairs = CaptionPairs.from_file(scenes_dir / "stage1.json", scenes_dir / "images", parts.tokenizer, parts.image_spec)
    pairs.grid = parts.model.config.vision_config.image_size // parts.model.config.vision_config.patch_size
    pairs.phrases = pairs.region_phrases()
    assert len(pairs.phrases) > 10 and all(isinstance(p, str) for p in pairs.phrases)
    record = pairs.records[0]
    labels = pairs[0]["patch_labels"]
    covered = torch.zeros_like(labels, dtype=torch.bool)
    for region in record["regions"]:
        covered |= box_mask(region["box"], pairs.grid).bool()
    assert (labels[~covered] == 0).all() and (labels[covered] > 0).all()
    last = record["regions"][-1]  # drawn last, so it names every patch of its box
    assert (labels[box_mask(last["box"], pairs.grid).bool()] == 1 + pairs.phrases.index(last["phrase"])).all()

    batch = CaptionCollator(parts.tokenizer.pad_token_id)([pairs[i] for i in range(8)])
    assert batch["patch_labels"].shape == (8, pairs.grid ** 2)
    pair = ContrastivePair(parts.model.model.vision_tower, len(parts.tokenizer), parts.tokenizer.pad_token_id,
                           dense_loss=1.0, dense_classes=len(pairs.phrases))
    with torch.no_grad():  # the stage's loss holds the dense term at its weight
        patches = pair._embed_images(batch["pixel_values"])[1]
        term = torch.nn.functional.cross_entropy(pair.dense_head(patches).flatten(0, 1),
                                                 batch["patch_labels"].flatten())
        with_term = pair(**batch)["loss"]
        pair.dense_loss = 0.0
        assert with_term.item() == pytest.approx((pair(**batch)["loss"] + term).item(), rel=1e-5)


def test_prerequisites_and_presets_are_checked(tmp_path, scenes_dir, aligned_start):
    raw = save_checkpoint(build_model("tiny"), tmp_path / "raw")
    with pytest.raises(ConfigError, match="stage align needs .*vision, lm.*run stage clip and lm first"):
        run_stage("align", model=str(raw), data=scenes_dir, out=tmp_path / "o1", options=quiet())
    with pytest.raises(ConfigError, match="stage instruct needs .*projector"):
        run_stage("instruct", model=str(aligned_start), data=scenes_dir, out=tmp_path / "o2", options=quiet())
    with pytest.raises(ConfigError, match="preset 'tiny', not 'demo'"):
        run_stage("align", preset="demo", model=str(aligned_start), data=scenes_dir, out=tmp_path / "o3",
                  options=quiet())
    with pytest.raises(DataError, match="missing: .*stage1.json"):
        run_stage("align", model=str(aligned_start), data=tmp_path, out=tmp_path / "o4", options=quiet())


def test_preset_tuning_applies_to_stages():
    demo = get_preset("demo")
    assert stage_for("align").hyper.lr == 1e-3 and stage_for("instruct").hyper.lr == 2e-5  # LLaVA-1.5
    assert stage_for("instruct", demo).hyper.lr == demo.training["instruct"]["lr"]
    tuned = stage_for("instruct", demo)
    assert tuned.trains == ("projector", "language_model", "vision_tower")  # the demo tunes its tower ...
    assert tuned.hyper.vision_lr_scale == 0.05 and stage_for("instruct").hyper.vision_lr_scale == 1.0  # ... slowly
    assert stage_for("align", demo).trains == ("projector",)


def test_a_tuned_tower_can_learn_at_its_own_rate(tiny, tmp_path):
    model = tiny.model
    hyper = stage_for("instruct").with_hyper(lr=1e-3, vision_lr_scale=0.1).hyper

    def rates(trains, scale):
        set_trainable(model, trains)
        args = training_arguments(tmp_path, hyper, 8, seed=0, save_every=None, progress=False)
        optimizer = EdgeTrainer(model=model, args=args, vision_lr_scale=scale).create_optimizer()
        return {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}

    tuned = rates(("projector", "language_model", "vision_tower"), 0.1)
    assert all(tuned[id(p)] == pytest.approx(1e-4) for p in model.model.vision_tower.parameters())
    assert {tuned[id(p)] for p in model.model.multi_modal_projector.parameters()} == {1e-3}
    assert len(tuned) == sum(1 for p in model.parameters() if p.requires_grad)
    assert set(rates(("projector", "language_model", "vision_tower"), 1.0).values()) == {1e-3}  # the Trainer's own
    assert set(rates(("projector", "language_model"), 0.1).values()) == {1e-3}  # a frozen tower has no rate


def test_nan_loss_stops_training_and_keeps_the_last_checkpoint(aligned_start, tmp_path, scenes_dir, monkeypatch):
    from transformers import Trainer

    real_step = Trainer.training_step

    def poisoned(self, model, inputs, num_items_in_batch=None):
        loss = real_step(self, model, inputs, num_items_in_batch)
        return loss * float("nan") if self.state.global_step >= 3 else loss

    monkeypatch.setattr(Trainer, "training_step", poisoned)
    out = tmp_path / "nan"
    with pytest.raises(TrainingDiverged, match="loss became nan at step 4"):
        run_stage("align", model=str(aligned_start), data=scenes_dir, out=out,
                  options=quiet(limit=40, save_every=1, overrides={"batch_size": 4}))
    kept = complete_checkpoints(out / "run")
    assert kept[-1].name == "checkpoint-3"
    weights = load_file(kept[-1] / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert not (out / "model").exists()


def _train_cmd(start, data, out, *extra):
    return [sys.executable, "-m", "edgelmm", "train", "--stage", "align", "--model", str(start), "--data", str(data),
            "--out", str(out), "--limit", "96", "--batch-size", "4", "--save-every", "1", "-q", *extra]


def test_kill_9_then_resume_equals_an_uninterrupted_run(aligned_start, tmp_path, scenes_dir):
    reference = tmp_path / "reference"
    subprocess.run(_train_cmd(aligned_start, scenes_dir, reference), check=True, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(aligned_start, scenes_dir, killed), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(complete_checkpoints(killed / "run")) < 1 or \
            (complete_checkpoints(killed / "run") and int(complete_checkpoints(killed / "run")[-1].name.split("-")[1]) < 6):
        assert proc.poll() is None, "training finished before it could be killed"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "model").exists()
    interrupted_at = int(complete_checkpoints(killed / "run")[-1].name.split("-")[1])
    assert 6 <= interrupted_at < 24

    subprocess.run(_train_cmd(aligned_start, scenes_dir, killed, "--resume"), check=True, capture_output=True)
    a, b = load_file(reference / "model" / "model.safetensors"), load_file(killed / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    log = [json.loads(line) for line in (killed / "run" / "log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in log if "loss" in r]
    assert steps == sorted(steps) and len(steps) == len(set(steps))  # the resumed log has no repeats


def test_two_process_ddp_on_cpu(aligned_start, tmp_path, scenes_dir):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--master_port", "29517", "-m", "edgelmm", "train", "--stage", "align", "--model",
                             str(aligned_start), "--data", str(scenes_dir), "--out", str(out), "--limit", "32",
                             "--batch-size", "4", "-q"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    state = json.loads((complete_checkpoints(out / "run")[-1] / "trainer_state.json").read_text())
    assert state["max_steps"] == 4  # 32 records / (batch 4 x 2 processes)
    assert (out / "model" / "model.safetensors").is_file()
