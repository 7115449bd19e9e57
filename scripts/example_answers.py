"""Write examples/README.md: what each example image holds and what the built-in model answers about it.

    python scripts/example_answers.py [--bundle BUNDLE]

The example images are EdgeScenes seed 7 (a seed no training or evaluation set uses). Their contents
come from the generator's own scene descriptions, the questions from the evaluation's question
templates (with the generator's answers), and the answers from the model, greedy, so the page is the
same on every run. Run it again whenever the built-in model changes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SEED = 7
FREE_FORM = "How many circles are there?"


def scenes_by_image() -> dict:
    from edgelmm.data.edgescenes.synth import sample_scenes

    names = sorted(p.name for p in EXAMPLES.glob(f"es{SEED}_*.png"))
    last = max(int(n[len(f"es{SEED}_"):-4]) for n in names)
    return {s.image: s for s in sample_scenes(last + 1, SEED) if s.image in names}


def short_questions(scene, index: int) -> list[dict]:
    from edgelmm.data.edgescenes import language as lang

    # The evaluation's templates on a stream of this page's own: every type the scene allows.
    rng = np.random.default_rng([SEED, index, 99])
    return lang.short_questions(scene, rng, exist_positive=index % 2 == 0, pope_split="adversarial",
                                popular=[])


def page(bundle: Path | None) -> str:
    import edgelmm
    from edgelmm.data.edgescenes import language as lang
    from edgelmm.eval.metrics import normalize_answer

    scenes = scenes_by_image()
    model = edgelmm.load(bundle)
    lines = ["# Example images", "",
             f"EdgeScenes images (seed {SEED}, a seed no training or evaluation set uses) for trying the "
             "built-in demo model:", "",
             "    edgelmm ask examples/es7_000002.png \"How many circles are there?\"", "",
             "What each image holds (the generator's own description):", "",
             "| image | objects |", "|---|---|"]
    lines += [f"| {image} | {', '.join(lang.name(o) for o in s.objects)} |" for image, s in scenes.items()]
    lines += ["", f"What the built-in model answers to \"{FREE_FORM}\" (greedy, so always the same):", "",
              "| image | circles | answer |", "|---|---|---|"]
    for image, s in scenes.items():
        answer = model.ask(EXAMPLES / image, FREE_FORM, max_tokens=32)
        lines.append(f"| {image} | {lang.count_shape(s, 'circle')} | {answer} |")
    lines += ["", "Short questions worded as the evaluation words them (with its instruction to answer in a "
              "word), the generator's answer and the model's:", "",
              "| image | question | truth | answer | right |", "|---|---|---|---|---|"]
    right = total = 0
    for index, (image, s) in enumerate(scenes.items()):
        for q in short_questions(s, index):
            answer = model.ask(EXAMPLES / image, q["question"] + lang.SHORT_ANSWER_SUFFIX, max_tokens=8)
            ok = normalize_answer(answer) == normalize_answer(q["answer"])
            right, total = right + ok, total + 1
            lines.append(f"| {image} | {q['question']} | {q['answer']} | {answer} | {'yes' if ok else 'no'} |")
    model.close()
    lines += ["", f"{right} of {total} right. Written by `python scripts/example_answers.py`.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="default: the built-in demo model")
    args = parser.parse_args()
    (EXAMPLES / "README.md").write_text(page(args.bundle))
    print(f"wrote {EXAMPLES / 'README.md'}")


if __name__ == "__main__":
    main()
