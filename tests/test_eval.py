"""Answer normalization, exact match, POPE metrics (checked by hand) and the eval command on tiny."""

import json

import pytest

from edgelmm.eval.metrics import normalize_answer, pope_metrics, score


@pytest.mark.parametrize("raw,normalized", [
    ("Two.", "2"), ("  RED circle", "red"), ("yes, there is", "yes"), ("6", "6"), ("", ""),
    ("Zero", "0"), ("no!", "no"), ("Triangle.\n", "triangle"),
])
def test_normalize_answer(raw, normalized):
    assert normalize_answer(raw) == normalized


def test_pope_metrics_by_hand():
    truths = ["yes", "yes", "yes", "no", "no", "no", "no", "yes"]
    preds = ["yes", "Yes.", "no", "yes", "no", "no", "no", "yes"]
    # TP = 3 (items 0, 1, 7), FN = 1 (item 2), FP = 1 (item 3), TN = 3 (items 4-6)
    m = pope_metrics(preds, truths)
    assert m["n"] == 8
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(0.75)
    assert m["yes_ratio"] == pytest.approx(4 / 8)
    assert pope_metrics(["no", "no"], ["yes", "no"])["precision"] == 0.0  # nothing predicted positive


def test_score_per_type_and_pope_splits():
    items = [{"type": "count", "answer": "2"}, {"type": "count", "answer": "3"},
             {"type": "color", "answer": "red"},
             {"type": "exist", "answer": "yes", "pope": "positive"},
             {"type": "exist", "answer": "no", "pope": "random"},
             {"type": "exist", "answer": "no", "pope": "adversarial"}]
    preds = ["two", "4", "Red.", "yes", "no", "yes"]
    report = score(items, preds)
    assert report["n"] == 6 and report["exact_match"] == pytest.approx(4 / 6)
    assert report["per_type"]["count"] == {"n": 2, "exact_match": 0.5}
    assert report["per_type"]["color"]["exact_match"] == 1.0
    assert report["pope"]["f1"] == pytest.approx(2 * 0.5 * 1.0 / 1.5)  # precision 1/2, recall 1
    assert report["pope"]["random"]["accuracy"] == 1.0  # positives + random negatives
    assert report["pope"]["adversarial"]["accuracy"] == 0.5


def test_eval_command_on_a_tiny_checkpoint(tiny, scenes_dir, tmp_path, capsys):
    from edgelmm import cli
    from edgelmm.modeling import save_checkpoint

    ckpt = save_checkpoint(tiny, tmp_path / "ckpt")
    out = tmp_path / "report.json"
    code = cli.main(["eval", str(ckpt), "--data", str(scenes_dir / "eval.json"), "--limit", "20", "-q",
                     "--json", str(out)])
    stdout, _ = capsys.readouterr()
    assert code == 0
    assert stdout.startswith("exact match") and "POPE" in stdout
    report = json.loads(out.read_text())
    assert report["n"] == 20 and len(report["predictions"]) == 20
    assert all(isinstance(p["prediction"], str) for p in report["predictions"])


def test_eval_bad_data_is_a_user_error(tiny, tmp_path, capsys):
    from edgelmm import cli

    (tmp_path / "eval.json").write_text(json.dumps([{"id": "q1", "question": "How many?"}]))
    code = cli.main(["eval", str(tmp_path), "--data", str(tmp_path / "eval.json")])
    _, err = capsys.readouterr()
    assert code == 2 and "eval item q1" in err and "missing answer" in err
