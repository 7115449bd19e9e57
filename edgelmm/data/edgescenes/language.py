"""Text about a scene, written from its exact symbolic description.

This plays the role GPT-4 played for LLaVA-Instruct: given captions and boxes, write brief captions,
multi-turn conversations, detailed descriptions, multi-step reasoning and short-answer questions.
Every answer is computed from the scene, so it is always right.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np

from edgelmm.data.edgescenes.world import CANVAS, COLORS, SHAPES, Scene, SceneObject

SHORT_ANSWER_SUFFIX = "\nAnswer the question using a single word or phrase."
QUESTION_TYPES = ("count", "color", "shape", "exist", "relation")
POPE_SPLITS = ("random", "popular", "adversarial")
RELATION_MARGIN = 20  # px between centres before "left of" / "above" is asked

BRIEF_INSTRUCTIONS = (
    "Describe the image briefly.",
    "Give a short description of this image.",
    "What does this picture show? Keep it short.",
    "Summarize the image in one sentence.",
    "Write a brief caption for the image.",
    "Provide a concise description of what you see.",
    "In a few words, what is in this image?",
    "Caption this picture.",
    "Briefly tell me what the image contains.",
    "Give a one-sentence summary of the scene.",
    "Describe the picture in a sentence.",
    "What is shown here? Answer briefly.",
)
DETAIL_INSTRUCTIONS = (
    "Describe the image in detail.",
    "Give a detailed description of everything in this picture.",
    "Explain in detail what this image shows, including where each object is.",
    "Describe every object in the image and its position.",
    "What is in this image? Be thorough.",
)

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def plural(n: int, word: str) -> str:
    return f"{NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else n} {word}{'' if n == 1 else 's'}"


def name(obj: SceneObject, size: bool = True) -> str:
    return f"{obj.size} {obj.color} {obj.shape}" if size else f"{obj.color} {obj.shape}"


def article(phrase: str) -> str:
    return f"an {phrase}" if phrase[0] in "aeiou" else f"a {phrase}"


def listing(phrases: list[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def position(obj: SceneObject) -> str:
    """Where an object is, in thirds of the canvas: "top left", "center", "bottom", ..."""
    third = CANVAS / 3
    col = ("left", "", "right")[min(int(obj.center[0] // third), 2)]
    row = ("top", "", "bottom")[min(int(obj.center[1] // third), 2)]
    return " ".join(w for w in (row, col) if w) or "center"


def where(obj: SceneObject) -> str:
    """The position as a phrase: "in the top left", "on the left", "at the top", "in the center"."""
    pos = position(obj)
    if pos in ("left", "right"):
        return f"on the {pos}"
    if pos in ("top", "bottom"):
        return f"at the {pos}"
    return f"in the {pos}"


def background_phrase(scene: Scene) -> str:
    return {"solid": "plain light", "gradient": "softly graded light", "noise": "lightly grainy"}[scene.background["kind"]]


def reading_order(scene: Scene) -> list[SceneObject]:
    """Objects from top to bottom, then left to right, as a person would list them."""
    third = CANVAS / 3
    return sorted(scene.objects, key=lambda o: (int(o.center[1] // third), o.center[0]))


def reference(scene: Scene, obj: SceneObject) -> str | None:
    """The shortest phrase naming `obj` alone in this scene ("red circle", "small red circle"), if any."""
    for with_size in (False, True):
        phrase = name(obj, with_size)
        if sum(name(o, with_size) == phrase for o in scene.objects) == 1:
            return phrase
    return None


def unique_by_combo(scene: Scene) -> list[SceneObject]:
    """Objects whose colour-shape combination occurs once (they can be asked about by colour and shape)."""
    combos = Counter((o.color, o.shape) for o in scene.objects)
    return [o for o in scene.objects if combos[(o.color, o.shape)] == 1]


def count_shape(scene: Scene, shape: str) -> int:
    return sum(o.shape == shape for o in scene.objects)


def count_color(scene: Scene, color: str) -> int:
    return sum(o.color == color for o in scene.objects)


# ---- captions and descriptions -------------------------------------------------------------------

def caption_forms(scene: Scene) -> list[str]:
    """Every way `caption` may word a scene."""
    things = [article(name(o)) for o in reading_order(scene)]
    n = len(things)
    bg = background_phrase(scene)
    if n == 1:
        return [f"{things[0].capitalize()} on a {bg} background.",
                f"A single {name(scene.objects[0])} on a {bg} background."]
    return [f"{plural(n, 'object').capitalize()} on a {bg} background: {listing(things)}.",
            f"{listing(things).capitalize()} on a {bg} background.",
            f"A {bg} background with {listing(things)}."]


def caption(scene: Scene, rng: np.random.Generator) -> str:
    return _pick(rng, caption_forms(scene))


def hard_negatives(scene: Scene, positive: str, rng: np.random.Generator) -> list[str]:
    """Captions worded like `positive` (a caption of `scene`) for scenes that differ in one detail,
    for contrastive training (NegCLIP).

    With in-batch negatives alone, the colours in a caption already tell images apart, so a tower
    trained on them never needs to see shapes. These captions change one object's shape, swap the
    shapes of two objects (binding colour to shape), and change one object's colour.
    """
    form = caption_forms(scene).index(positive)

    def altered(change) -> str:
        objects = [replace(o) for o in scene.objects]
        change(objects)
        return caption_forms(Scene(scene.id, scene.image, scene.background, objects))[form]

    def new_shape(objects):
        obj = _pick(rng, objects)
        obj.shape = _pick(rng, [s for s in SHAPES if s != obj.shape])

    def swap_shapes(objects):
        pairs = [(a, b) for i, a in enumerate(objects) for b in objects[i + 1:] if a.shape != b.shape]
        if not pairs:
            return new_shape(objects)
        a, b = _pick(rng, pairs)
        a.shape, b.shape = b.shape, a.shape

    def new_color(objects):
        obj = _pick(rng, objects)
        obj.color = _pick(rng, [c for c in COLORS if c != obj.color])

    return [altered(change) for change in (new_shape, swap_shapes, new_color)]


def detailed_description(scene: Scene, rng: np.random.Generator) -> str:
    n = len(scene.objects)
    parts = [f"The image shows {plural(n, 'object')} on a {background_phrase(scene)} background."]
    for obj in reading_order(scene):
        thing, at = article(name(obj)), where(obj)
        parts.append(_pick(rng, (f"{at.capitalize()} there is {thing}.", f"{thing.capitalize()} sits {at}.",
                                 f"There is {thing} {at}.")))
    counts = [plural(count_shape(scene, s), s) for s in SHAPES if count_shape(scene, s)]
    parts.append(f"Altogether: {listing(counts)}.")
    return " ".join(parts)


# ---- short answers (evaluation and LLaVA-1.5-style VQA data) -------------------------------------

def _mostly_present(rng: np.random.Generator, present: list[str], every) -> str:
    """One of `present` (what the scene holds) 60% of the time, else any of `every`: asked about any
    shape or colour at random, most counts would be zero."""
    return _pick(rng, present if rng.random() < 0.6 else every)


def _count_question(scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    variant = int(rng.integers(3))
    if variant == 0:
        shape = _mostly_present(rng, sorted({o.shape for o in scene.objects}), SHAPES)
        return f"How many {shape}s are there?", str(count_shape(scene, shape))
    if variant == 1:
        color = _mostly_present(rng, sorted({o.color for o in scene.objects}), tuple(COLORS))
        return f"How many {color} objects are there?", str(count_color(scene, color))
    return "How many objects are there?", str(len(scene.objects))


def _color_question(scene: Scene, rng: np.random.Generator) -> tuple[str, str] | None:
    shapes = [s for s in SHAPES if count_shape(scene, s) == 1]
    if not shapes:
        return None
    shape = _pick(rng, shapes)
    return f"What color is the {shape}?", next(o.color for o in scene.objects if o.shape == shape)


def _shape_question(scene: Scene, rng: np.random.Generator) -> tuple[str, str] | None:
    colors = [c for c in COLORS if count_color(scene, c) == 1]
    if not colors:
        return None
    color = _pick(rng, colors)
    return f"What shape is the {color} object?", next(o.shape for o in scene.objects if o.color == color)


def absent_combo(scene: Scene, split: str, rng: np.random.Generator, popular: list[tuple[str, str]]) -> tuple[str, str]:
    """A (colour, shape) not in the scene, chosen as in POPE's random, popular or adversarial splits.

    popular: among the combinations most frequent in the whole data set; adversarial: a colour and a
    shape that are both in the scene, only never together (falling back to sharing one of them).
    """
    present = {(o.color, o.shape) for o in scene.objects}
    absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present]
    if split == "popular":
        ranked = [combo for combo in popular if combo not in present]
        return ranked[int(rng.integers(min(3, len(ranked))))]
    if split == "adversarial":
        colors, shapes = {o.color for o in scene.objects}, {o.shape for o in scene.objects}
        for pool in ([a for a in absent if a[0] in colors and a[1] in shapes],
                     [a for a in absent if a[0] in colors or a[1] in shapes]):
            if pool:
                return _pick(rng, pool)
    return _pick(rng, absent)


def _exist_question(scene: Scene, rng: np.random.Generator, positive: bool, split: str,
                    popular: list[tuple[str, str]]) -> tuple[str, str]:
    if positive:
        obj = _pick(rng, scene.objects)
        color, shape = obj.color, obj.shape
    else:
        color, shape = absent_combo(scene, split, rng, popular)
    return f"Is there {article(f'{color} {shape}')} in the image?", "yes" if positive else "no"


def relation_pairs(scene: Scene) -> list[tuple[SceneObject, SceneObject, str]]:
    """(a, b, axis) for uniquely named objects whose centres differ by >= RELATION_MARGIN on the axis."""
    objs = unique_by_combo(scene)
    pairs = []
    for i, a in enumerate(objs):
        for b in objs[i + 1:]:
            for axis, k in (("left", 0), ("above", 1)):
                if abs(a.center[k] - b.center[k]) >= RELATION_MARGIN:
                    pairs.append((a, b, axis))
    return pairs


def relation_question(a: SceneObject, b: SceneObject, axis: str) -> tuple[str, str]:
    """"Is the <a> to the left of / above the <b>?" and its answer, for a pair of `relation_pairs`."""
    k = 0 if axis == "left" else 1
    relation = "to the left of" if axis == "left" else "above"
    answer = "yes" if a.center[k] < b.center[k] else "no"
    return f"Is the {name(a, False)} {relation} the {name(b, False)}?", answer


def _relation_question(scene: Scene, rng: np.random.Generator) -> tuple[str, str] | None:
    pairs = relation_pairs(scene)
    if not pairs:
        return None
    a, b, axis = _pick(rng, pairs)
    if rng.random() < 0.5:
        a, b = b, a
    return relation_question(a, b, axis)


def short_questions(scene: Scene, rng: np.random.Generator, *, exist_positive: bool, pope_split: str,
                    popular: list[tuple[str, str]]) -> list[dict]:
    """One question of each type the scene allows: {"question", "answer", "type"} (no suffix yet)."""
    items = [("count", _count_question(scene, rng)), ("color", _color_question(scene, rng)),
             ("shape", _shape_question(scene, rng)),
             ("exist", _exist_question(scene, rng, exist_positive, pope_split, popular)),
             ("relation", _relation_question(scene, rng))]
    out = []
    for qtype, qa in items:
        if qa is not None:
            item = {"question": qa[0], "answer": qa[1], "type": qtype}
            if qtype == "exist":
                item["pope"] = "positive" if exist_positive else pope_split
            out.append(item)
    return out


# ---- conversations and reasoning (LLaVA-Instruct style) ------------------------------------------

def _there_are(n: int, word: str) -> str:
    if n == 0:
        return f"There are no {word}s."
    return f"There {'is' if n == 1 else 'are'} {plural(n, word)}."


def conversation(scene: Scene, rng: np.random.Generator) -> list[tuple[str, str]]:
    """Two to four question-answer turns in full sentences."""
    askers = [_conv_objects, _conv_count, _conv_color, _conv_where, _conv_exist, _conv_size, _conv_background]
    wanted = int(rng.integers(2, 5))
    turns = []
    for i in rng.permutation(len(askers)):
        qa = askers[i](scene, rng)
        if qa:
            turns.append(qa)
        if len(turns) == wanted:
            break
    return turns


def _conv_objects(scene, rng):
    things = [article(name(o)) for o in reading_order(scene)]
    q = _pick(rng, ("What objects can you see?", "What is in the picture?", "Which shapes are shown?"))
    return q, f"I can see {plural(len(things), 'object')}: {listing(things)}."


COUNT_WORDINGS = ("How many {}s are there?", "How many {}s are in the picture?", "How many {}s can you see?",
                  "Count the {}s in the image.")


def _conv_count(scene, rng):
    shape = _mostly_present(rng, sorted({o.shape for o in scene.objects}), SHAPES)
    return _pick(rng, COUNT_WORDINGS).format(shape), _there_are(count_shape(scene, shape), shape)


def _conv_color(scene, rng):
    qa = _color_question(scene, rng)
    if qa:
        return qa[0], f"The {qa[0].split()[-1].rstrip('?')} is {qa[1]}."
    return None


def _conv_where(scene, rng):
    obj = _pick(rng, scene.objects)
    ref = reference(scene, obj)
    if ref is None:
        return None
    return f"Where is the {ref}?", f"The {ref} is {where(obj)} of the image."


def _conv_exist(scene, rng):
    # Half about an object that is there; a random colour and shape would almost always be absent.
    if rng.random() < 0.5:
        obj = _pick(rng, scene.objects)
        color, shape = obj.color, obj.shape
    else:
        color, shape = _pick(rng, tuple(COLORS)), _pick(rng, SHAPES)
    hits = [o for o in scene.objects if (o.color, o.shape) == (color, shape)]
    q = f"Is there {article(f'{color} {shape}')} in the image?"
    if not hits:
        return q, f"No, there is no {color} {shape} in the image."
    if len(hits) == 1:
        return q, f"Yes, there is {article(f'{color} {shape}')} {where(hits[0])}."
    return q, f"Yes, there are {plural(len(hits), f'{color} {shape}')}."


def _conv_size(scene, rng):
    objs = [o for o in scene.objects if reference(scene, o)]
    if len(objs) < 2:
        return None
    a, b = (objs[i] for i in rng.choice(len(objs), 2, replace=False))
    ra, rb = reference(scene, a), reference(scene, b)
    q = f"Is the {ra} bigger than the {rb}?"
    if a.size == b.size:
        return q, f"No, they are about the same size: both are {a.size}."
    yes = a.size == "large"
    return q, f"{'Yes' if yes else 'No'}, the {ra} is {a.size} and the {rb} is {b.size}."


def _conv_background(scene, rng):
    return "What does the background look like?", f"The background is {background_phrase(scene)}, with no pattern."


def reasoning(scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    """One question that needs several steps: counting after a change, comparing, or ordering in space."""
    for i in rng.permutation(4):
        qa = (_reason_remove, _reason_add, _reason_compare, _reason_order)[i](scene, rng)
        if qa:
            return qa
    raise AssertionError("comparing two shapes always applies")


def _reason_remove(scene, rng):
    obj = _pick(rng, scene.objects)
    ref = reference(scene, obj)
    if ref is None:
        return None
    n = len(scene.objects)
    things = listing([article(name(o)) for o in reading_order(scene)])
    left = "no objects" if n == 1 else plural(n - 1, "object")
    return (f"If the {ref} were removed, how many objects would be left in the image?",
            f"The image has {plural(n, 'object')}: {things}. Removing the {ref} leaves {left}.")


def _reason_add(scene, rng):
    shape, color, k = _pick(rng, SHAPES), _pick(rng, tuple(COLORS)), int(rng.integers(1, 4))
    c = count_shape(scene, shape)
    now = f"there {'is' if c == 1 else 'are'} {plural(c, shape)}" if c else f"there are no {shape}s"
    return (f"If {NUMBER_WORDS[k]} more {color} {shape}{'' if k == 1 else 's'} were added, "
            f"how many {shape}s would there be?",
            f"Right now {now}. Adding {NUMBER_WORDS[k]} more gives {c} + {k} = {c + k}, "
            f"so there would be {plural(c + k, shape)}.")


def _reason_compare(scene, rng):
    a, b = (SHAPES[i] for i in rng.choice(len(SHAPES), 2, replace=False))
    ca, cb = count_shape(scene, a), count_shape(scene, b)
    q = f"Are there more {a}s than {b}s in the image?"
    facts = f"I count {plural(ca, a)} and {plural(cb, b)}"
    if ca > cb:
        return q, f"{facts}. {ca} is more than {cb}, so yes, there are more {a}s."
    if ca == cb:
        return q, f"{facts}. The numbers are equal, so no, there are not more {a}s."
    return q, f"{facts}. {ca} is less than {cb}, so no, there are more {b}s than {a}s."


def _reason_order(scene, rng):
    named = [(o, reference(scene, o)) for o in scene.objects]
    if len(named) < 2 or any(ref is None for _, ref in named):
        return None
    axis = int(rng.integers(2))
    ordered = sorted(named, key=lambda p: p[0].center[axis])
    if ordered[1][0].center[axis] - ordered[0][0].center[axis] < RELATION_MARGIN:
        return None
    side, sweep = (("left", "from left to right"), ("top", "from top to bottom"))[axis]
    chain = listing([f"the {ref}" for _, ref in ordered])
    first = ordered[0][1]
    return (f"Which object is closest to the {side} of the image?",
            f"Going {sweep}, the objects are {chain}. So the {first} is closest to the {side}.")
