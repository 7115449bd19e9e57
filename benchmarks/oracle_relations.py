"""Can the demo model's language model learn to compare places when its image tokens are perfect?

    python benchmarks/oracle_relations.py EDGESCENES_DIR [--tasks relation,where] [--steps 2500] [--every 250]
        [--lm-layers N] [--max-objects N] [--name oracle_relations]

A diagnostic for the relation questions ("Is the red circle to the left of the blue square?"), which
the demo model answers at chance. It takes the vision tower out of the question: each image token is
the scene's exact ground truth for one patch of the demo tower's grid (one-hot colour and shape of the
object whose box holds the patch centre, or "none", plus the patch's column and row as numbers in
[-1, 1]). The demo preset's projector and a language model of the demo preset's size, both fresh,
are trained from these tokens at the preset's instruct rate, one task at a time (`--lm-layers` makes
the language model deeper or shallower than the preset's, `--max-objects` keeps the scenes with at
most that many objects):

- `relation`: the generator's relation questions (its pairs, margin and wording), yes or no;
- `where`: "Where is the red circle?", answered with the generator's nine positions (`position`).

Words are whole tokens here (no BPE) and the loss is on the answer alone, so whatever the model fails
to learn is the reading and comparing of places, not the text. Held-out accuracy on the last tenth of
the scenes is measured along training, beside the share of the commonest answer.

Results: benchmarks/results/NAME.{json,md,png}.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import random
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
TASKS = ("relation", "where")


def patch_tokens(scene, grid: int):
    """(grid*grid, features): colour, shape, "none" one-hots and the patch's column and row."""
    import numpy as np

    from edgelmm.data.edgescenes.world import CANVAS, COLORS, SHAPES

    colors = list(COLORS)
    feats = np.zeros((grid * grid, len(colors) + len(SHAPES) + 3), np.float32)
    cell = CANVAS / grid
    for r in range(grid):
        for c in range(grid):
            x, y, k = (c + 0.5) * cell, (r + 0.5) * cell, r * grid + c
            hits = [o for o in scene.objects if o.bbox[0] <= x <= o.bbox[2] and o.bbox[1] <= y <= o.bbox[3]]
            if hits:  # the later object is drawn on top
                feats[k, colors.index(hits[-1].color)] = 1
                feats[k, len(colors) + SHAPES.index(hits[-1].shape)] = 1
            else:
                feats[k, len(colors) + len(SHAPES)] = 1
            feats[k, -2:] = (2 * c / (grid - 1) - 1, 2 * r / (grid - 1) - 1)
    return feats


def questions(scene, task: str) -> list[tuple[str, str]]:
    """Every question of this task the scene allows, worded as the generator words them ("?" a word)."""
    from edgelmm.data.edgescenes.language import name, position, relation_pairs, relation_question, unique_by_combo

    if task == "where":
        asked = [(f"Where is the {name(o, False)}?", position(o)) for o in unique_by_combo(scene)]
    else:
        asked = [relation_question(x, y, axis) for a, b, axis in relation_pairs(scene) for x, y in ((a, b), (b, a))]
    return [(question.replace("?", " ?"), answer) for question, answer in asked]


def train_task(scenes: list, task: str, args, preset) -> dict:
    import numpy as np
    import torch
    from transformers import Phi3Config, Phi3ForCausalLM

    from edgelmm.modeling.projectors import PROJECTORS
    from edgelmm.modeling.projectors.base import ProjectorInput

    grid = preset.vision["image_size"] // preset.vision["patch_size"]
    rows = [(torch.from_numpy(patch_tokens(s, grid)), q) for s in scenes
            if len(s.objects) <= args.max_objects and (q := questions(s, task))]
    cut = len(rows) * 9 // 10
    train, held_out = rows[:cut], rows[cut:]
    words = sorted({w for _, qs in rows for q, a in qs for w in (q.split() + [a])})
    vocab = {w: i + 2 for i, w in enumerate(words)}  # 0: padding, 1: start
    answers = sorted({a for _, qs in rows for _, a in qs})

    torch.manual_seed(args.seed)
    lm_args = {**preset.lm, "num_hidden_layers": args.lm_layers or preset.lm["num_hidden_layers"],
               "vocab_size": len(vocab) + 2, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 1}
    lm = Phi3ForCausalLM(Phi3Config(**lm_args))
    width = preset.lm["hidden_size"]
    projector = PROJECTORS.get(preset.projector)(
        ProjectorInput(vision_dim=train[0][0].shape[1], text_dim=width, num_patches=grid * grid))
    params = [*lm.parameters(), *projector.parameters()]
    lr = preset.training["instruct"]["lr"]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    warmup = max(1, args.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: min(1.0, (t + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * min(t, args.steps) / args.steps)))
    embed = lm.get_input_embeddings()

    def forward(picked: list[tuple]) -> tuple:
        """Logits at the last position of [start, image tokens, question] (questions left-padded)."""
        ids = [[vocab[w] for w in q.split()] for _, q, _ in picked]
        longest = max(map(len, ids))
        text = torch.tensor([[0] * (longest - len(t)) + t for t in ids])
        start = embed(torch.ones(len(picked), 1, dtype=torch.long))
        image = projector(torch.stack([f for f, _, _ in picked]))
        logits = lm(inputs_embeds=torch.cat([start, image, embed(text)], 1)).logits[:, -1]
        return logits, torch.tensor([vocab[a] for _, _, a in picked])

    rng = random.Random(args.seed)
    fixed = random.Random(1)
    probe = [(f, *qs[fixed.randrange(len(qs))]) for f, qs in held_out][:args.held_out]  # one per scene
    commonest = max(answers, key=lambda a: sum(x[2] == a for x in probe))
    baseline = sum(x[2] == commonest for x in probe) / len(probe)
    curve, started = [], time.time()
    for step in range(1, args.steps + 1):
        picked = []
        for _ in range(args.batch):
            f, qs = train[rng.randrange(len(train))]
            picked.append((f, *qs[rng.randrange(len(qs))]))
        logits, target = forward(picked)
        loss = torch.nn.functional.cross_entropy(logits, target)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % args.every == 0 or step == args.steps:
            with torch.no_grad():
                right = 0
                for i in range(0, len(probe), 64):
                    logits, target = forward(probe[i:i + 64])
                    right += int((logits.argmax(-1) == target).sum())
            point = {"step": step, "questions_seen": step * args.batch, "loss": round(loss.item(), 4),
                     "held_out_accuracy": right / len(probe), "seconds": round(time.time() - started, 1)}
            print(json.dumps({"task": task, **point}), flush=True)
            curve.append(point)
    return {"task": task, "lm_layers": lm_args["num_hidden_layers"], "max_objects": args.max_objects,
            "scenes": len(rows), "answers": len(answers),
            "commonest_answer": commonest, "commonest_share": baseline, "held_out_questions": len(probe), "lr": lr,
            "curve": curve}


def main() -> None:
    import torch

    from edgelmm.cpu import cpu_info
    from edgelmm.data.edgescenes.world import MAX_OBJECTS, Scene
    from edgelmm.presets import get_preset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="an EdgeScenes folder (its scenes.json)")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--held-out", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lm-layers", type=int, help="the language model's depth (default: the demo preset's)")
    parser.add_argument("--max-objects", type=int, default=MAX_OBJECTS,
                        help="only scenes with at most this many objects")
    parser.add_argument("--name", default="oracle_relations")
    args = parser.parse_args()
    preset = get_preset("demo")
    scenes = [Scene.from_dict(s) for s in json.loads((args.data / "scenes.json").read_text())["images"]]
    report = {"created": datetime.datetime.now().isoformat(timespec="seconds"),
              "machine": cpu_info().get("model name", "unknown CPU"),
              "threads": torch.get_num_threads(),
              "python": platform.python_version(), "torch": torch.__version__, "scenes": len(scenes),
              "batch": args.batch, "tasks": [train_task(scenes, t, args, preset) for t in args.tasks.split(",")]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"{args.name}.md").write_text(markdown(report))
    chart(report, RESULTS / f"{args.name}.png")
    print(markdown(report))


def markdown(r: dict) -> str:
    lines = ["# The demo language model on perfect image tokens", "",
             f"{r['created']}, {r['machine']}, {r['threads']} threads; {r['scenes']} EdgeScenes scenes, "
             f"batches of {r['batch']} questions; held-out accuracy on the last tenth of the scenes.", "",
             "| task | LM layers | objects per scene | answers | commonest answer's share | step | questions seen | "
             "loss | held-out accuracy |",
             "|---|---|---|---|---|---|---|---|---|"]
    for t in r["tasks"]:
        for p in t["curve"]:
            lines.append(f"| {t['task']} | {t['lm_layers']} | at most {t['max_objects']} | {t['answers']} | "
                         f"{100 * t['commonest_share']:.1f}% | "
                         f"{p['step']} | {p['questions_seen']} | {p['loss']:.3f} | "
                         f"{100 * p['held_out_accuracy']:.1f}% |")
    return "\n".join(lines) + "\n"


def chart(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for t in r["tasks"]:
        line, = ax.plot([p["step"] for p in t["curve"]], [100 * p["held_out_accuracy"] for p in t["curve"]],
                        marker="o", label=f"{t['task']} ({t['answers']} answers, {t['lm_layers']}-layer LM)")
        ax.axhline(100 * t["commonest_share"], color=line.get_color(), linestyle=":", linewidth=1)
    ax.set(xlabel="training step", ylabel="held-out accuracy (%)",
           title="demo LM on perfect image tokens (dotted: commonest answer)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
