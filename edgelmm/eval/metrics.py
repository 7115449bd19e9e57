"""Scoring short answers: normalization, exact match per question type, and POPE metrics.

POPE (Polling-based Object Probing Evaluation) asks "Is there a X in the image?" with yes/no answers;
"yes" is the positive class, and a yes-ratio far from the truth's shows a model that says yes (or no)
regardless of the image: object hallucination.
"""

from __future__ import annotations

import re
import string
from collections import defaultdict

NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"))}
_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize_answer(text: str) -> str:
    """Lowercase, punctuation removed, number words as digits, first word only ("Two." -> "2")."""
    words = _PUNCTUATION.sub(" ", text.lower()).split()
    if not words:
        return ""
    return NUMBER_WORDS.get(words[0], words[0])


def pope_metrics(predictions: list[str], truths: list[str]) -> dict:
    """Accuracy, precision, recall, F1 and yes-ratio of normalized yes/no answers ("yes" is positive)."""
    pairs = [(normalize_answer(p) == "yes", normalize_answer(t) == "yes") for p, t in zip(predictions, truths)]
    n = len(pairs)
    tp = sum(p and t for p, t in pairs)
    fp = sum(p and not t for p, t in pairs)
    fn = sum(t and not p for p, t in pairs)
    tn = n - tp - fp - fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"n": n, "accuracy": (tp + tn) / n if n else 0.0, "precision": precision, "recall": recall,
            "f1": f1, "yes_ratio": (tp + fp) / n if n else 0.0}


def score(items: list[dict], predictions: list[str]) -> dict:
    """Exact match overall and per `type`, plus POPE metrics on the `exist` items (overall and per split)."""
    per_type: dict[str, list[bool]] = defaultdict(list)
    for item, pred in zip(items, predictions):
        per_type[item.get("type", "all")].append(normalize_answer(pred) == normalize_answer(item["answer"]))
    hits = [h for hs in per_type.values() for h in hs]
    report = {"n": len(hits), "exact_match": sum(hits) / len(hits) if hits else 0.0,
              "per_type": {t: {"n": len(hs), "exact_match": sum(hs) / len(hs)} for t, hs in sorted(per_type.items())}}
    exist = [(item, pred) for item, pred in zip(items, predictions) if item.get("type") == "exist"]
    if exist:
        report["pope"] = pope_metrics([p for _, p in exist], [i["answer"] for i, _ in exist])
        splits = sorted({i["pope"] for i, _ in exist if i.get("pope") not in (None, "positive")})
        # Each negative split is scored with all positives, as POPE's splits share their positives.
        for split in splits:
            chosen = [(i, p) for i, p in exist if i.get("pope") in ("positive", split)]
            report["pope"][split] = pope_metrics([p for _, p in chosen], [i["answer"] for i, _ in chosen])
    return report
