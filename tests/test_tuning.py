"""The runtime's machine-dependent settings on a tiny bundle: measured once, remembered, honoured; and a
context that starts small and grows with a conversation without changing its answers."""

import json

import numpy as np
import pytest

from edgelmm.runtime.calibration import STORE_FILE, CalibrationStore, store_key


@pytest.fixture(scope="module")
def bundle(checkpoint, tmp_path_factory):
    from edgelmm.export.bundle import export_bundle

    return export_bundle(checkpoint, tmp_path_factory.mktemp("bundles") / "tiny-q8", quant="q8_0")


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGELMM_CACHE_DIR", str(tmp_path))
    return CalibrationStore()


def _sha(bundle) -> str:
    return json.loads((bundle / "edgelmm.json").read_text())["files"]["lm"]["sha256"]


def test_first_load_measures_both_layouts_and_later_loads_reuse_the_choice(bundle, store):
    import edgelmm

    model = edgelmm.load(bundle, n_threads=1)
    record = model.backend.calibration
    assert set(record["measured"]) == {"repack", "no_repack"}
    for figures in record["measured"].values():  # a setting that crashes llama.cpp is recorded as such
        assert "error" in figures or (figures["prefill_tok_s"] > 0 and figures["decode_tok_s"] > 0)
    chosen = record["measured"]["repack" if record["repack"] else "no_repack"]
    assert "error" not in chosen and model.backend.settings.repack == record["repack"]
    assert model.ask(np.zeros((32, 32, 3), dtype=np.uint8), "What is it?", max_tokens=4) is not None
    stored = store.get(store_key(_sha(bundle), 1))
    assert stored == record and json.loads(store.path.read_text())["version"] == 1
    model.close()

    # The store decides the next load: an edited choice is obeyed, nothing is measured again.
    flipped = {**record, "repack": not record["repack"], "measured": {}}
    store.put(store_key(_sha(bundle), 1), flipped)
    again = edgelmm.load(bundle, n_threads=1)
    assert again.backend.calibration == flipped and again.backend.settings.repack == (not record["repack"])
    again.close()
    # Another thread count is another calibration.
    assert store.get(store_key(_sha(bundle), 2)) is None


def test_a_fixed_layout_skips_calibration_and_a_damaged_store_is_measured_again(bundle, store):
    import edgelmm

    fixed = edgelmm.load(bundle, n_threads=1, repack=False)
    assert fixed.backend.settings.repack is False and fixed.backend.calibration is None
    assert not store.path.exists()
    fixed.close()
    store.path.write_text("{not json")
    model = edgelmm.load(bundle, n_threads=1)
    assert model.backend.calibration["measured"]
    assert json.loads((store.path.parent / STORE_FILE).read_text())["entries"]
    model.close()


def test_the_context_grows_with_a_conversation_and_answers_stay_the_same(bundle, store):
    import edgelmm

    image = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    questions = ["Describe the image.", "How many shapes are there?", "What colour is the circle?",
                 "Is there a star?", "Where is the square?", "Describe it again, in more words."]
    growing = edgelmm.load(bundle, n_threads=1, repack=False)
    fixed = edgelmm.load(bundle, n_threads=1, repack=False, n_ctx=512)  # the model's whole context
    start = growing.backend.n_ctx
    assert start < fixed.backend.n_ctx == 512
    a, b = growing.chat(image), fixed.chat(image)
    for question in questions:
        assert a.ask(question, max_tokens=64) == b.ask(question, max_tokens=64)
    assert growing.backend.n_ctx > start  # it grew, and the cache it carried over answered the same
    assert growing.timings.reused_tokens > 0


def test_a_fixed_context_stays_fixed(bundle, store):
    import edgelmm

    from edgelmm.errors import UserError

    model = edgelmm.load(bundle, n_threads=1, repack=False, n_ctx=256)
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    with pytest.raises(UserError, match="context"):
        model.ask(image, "word " * 300)
    assert model.backend.n_ctx == 256
    assert model.ask(image, "word " * 100, max_tokens=8) is not None


def test_cli_calibrate_measures_again_and_ask_takes_a_fixed_context(bundle, store, capfd, monkeypatch):
    from test_runtime import run_cli

    code, out, err = run_cli(capfd, monkeypatch, "calibrate", "-m", bundle, "--threads", 1, "--json")
    record = json.loads(out)["settings"]
    assert code == 0 and set(record["measured"]) == {"repack", "no_repack"}
    assert store.get(store_key(_sha(bundle), 1)) == record
    image = bundle.parent / "photo.png"
    from PIL import Image

    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(image)
    code, out, err = run_cli(capfd, monkeypatch, "ask", image, "word " * 300, "-m", bundle, "--threads", 1,
                             "--ctx", 256)
    assert code == 2 and "context" in err and len(err.strip().splitlines()) == 1
    code, out, err = run_cli(capfd, monkeypatch, "calibrate", "-m", bundle.parent / "missing")
    assert code == 2 and "not found" in err


def test_torch_backend_runs_in_bfloat16(bundle):
    import torch

    import edgelmm

    model = edgelmm.load(bundle, backend="torch", dtype="bfloat16")
    assert next(model.backend.parts.model.parameters()).dtype == torch.bfloat16
    answer = model.ask(np.zeros((32, 32, 3), dtype=np.uint8), "What is it?", max_tokens=6)
    assert isinstance(answer, str)
    with pytest.raises(edgelmm.errors.UserError, match="unknown torch dtype"):
        edgelmm.load(bundle, backend="torch", dtype="float8")
