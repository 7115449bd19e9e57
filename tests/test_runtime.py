"""The runtime on a tiny bundle: llama.cpp against the torch reference, conversations reusing the KV
cache, streaming, threads, image kinds, and every way a bundle or a question can be wrong."""

import json
import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image

from edgelmm.errors import UserError
from edgelmm.bundle_format import MANIFEST, BundleError


@pytest.fixture(scope="module")
def bundle(checkpoint, tmp_path_factory):
    from edgelmm.export.bundle import export_bundle

    return export_bundle(checkpoint, tmp_path_factory.mktemp("bundles") / "tiny-f16", quant="f16")


@pytest.fixture(scope="module")
def model(bundle):
    import edgelmm

    return edgelmm.load(bundle)


@pytest.fixture(scope="module")
def reference(bundle):
    import edgelmm

    return edgelmm.load(bundle, backend="torch")


def test_llamacpp_answers_equal_torch_answers(model, reference, scenes_dir):
    items = json.loads((scenes_dir / "eval.json").read_text())[:100]
    same = 0
    for item in items:
        image = scenes_dir / "images" / item["image"]
        same += model.ask(image, item["question"], max_tokens=8) == reference.ask(image, item["question"], max_tokens=8)
    assert same >= 95


def test_chat_template_renders_like_transformers(checkpoint):
    from edgelmm.modeling import load_checkpoint
    from edgelmm.chat import ChatFormat

    tok = load_checkpoint(checkpoint).tokenizer
    fmt = ChatFormat(tok.chat_template, bos=tok.bos_token, system_prompt="Be brief.")
    turns = [("How many?", "Two."), ("What colour?", None)]
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "<image>\nHow many?"},
                {"role": "assistant", "content": "Two."}, {"role": "user", "content": "What colour?"}]
    assert fmt.render_text(turns) == tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def test_follow_up_reuses_the_cache_and_equals_a_fresh_reading(model, scenes_dir):
    image = scenes_dir / "images" / "es0_000003.png"
    conv = model.chat(image)
    first = conv.ask("How many circles are there?", max_tokens=6)
    after_first = (list(conv.turns), conv._text_keys)
    cached = len(model._cached)
    second = conv.ask("What color is the star?", max_tokens=6)
    assert model.timings.reused_tokens == cached  # neither the image nor the first turn was decoded again
    assert model.timings.image_encode == model.timings.image_prefill == 0.0
    assert model.timings.prompt_tokens - model.timings.reused_tokens < 20
    assert first == conv.turns[0][1].strip()

    model.backend.truncate(0)  # the same conversation decoded from an empty cache gives the same answer
    model._cached = []
    replay = model.chat(conv.image)
    replay.turns, replay._text_keys = after_first
    assert replay.ask("What color is the star?", max_tokens=6) == second
    assert model.timings.reused_tokens == len(replay.image_keys())  # what chat() read in, nothing more


def test_chat_reads_the_image_in_before_the_first_question(model, scenes_dir):
    conv = model.chat(scenes_dir / "images" / "es0_000004.png")
    image_keys = conv.image_keys()
    assert model._cached == image_keys and model.backend.position == len(image_keys)
    assert model.timings.image_prefill > 0
    conv.ask("How many objects are there?", max_tokens=6)
    assert model.timings.reused_tokens == len(image_keys)  # the question's tokens were all that was left
    t = model.timings
    assert t.time_to_first_token == t.image_encode + t.image_prefill + t.first_token


def test_every_image_kind_and_embeddings_give_one_answer(model, scenes_dir):
    path = scenes_dir / "images" / "es0_000005.png"
    pil = Image.open(path)
    expected = model.ask(path, "Describe the image.", max_tokens=8)
    for image in (str(path), path.read_bytes(), pil, np.asarray(pil.convert("RGB"))):
        assert model.ask(image, "Describe the image.", max_tokens=8) == expected
    embeds = model.encode_image(path)
    assert embeds.shape == (16, 64) and embeds.dtype == np.float32
    assert model.ask(embeds, "Describe the image.", max_tokens=8) == expected


def test_stream_yields_the_answer_in_pieces(model, scenes_dir):
    path = scenes_dir / "images" / "es0_000006.png"
    pieces = list(model.ask(path, "Describe the image.", max_tokens=12, stream=True))
    assert len(pieces) > 1 and "".join(pieces).strip() == model.ask(path, "Describe the image.", max_tokens=12)
    timings = model.timings.to_dict()
    assert timings["decode_tokens"] > 0 and timings["first_token"] > 0 and timings["tokens_per_second"] > 0


def test_threads_share_one_model_safely(model, scenes_dir):
    paths = [scenes_dir / "images" / f"es0_{i:06d}.png" for i in range(8)]
    expected = [model.ask(p, "How many objects are there?", max_tokens=6) for p in paths]
    got = [None] * len(paths)

    def work(i):
        got[i] = model.ask(paths[i], "How many objects are there?", max_tokens=6)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(paths))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == expected


def test_each_thread_reads_its_own_timings_and_answer_returns_them(model, scenes_dir):
    path = scenes_dir / "images" / "es0_000003.png"
    result = model.answer(path, "Describe the image.", max_tokens=7)
    assert result.text == model.ask(path, "Describe the image.", max_tokens=7)
    assert result.timings.image_encode > 0 and result.timings.decode_tokens <= 7
    assert result.to_dict()["answer"] == result.text
    seen = {}

    def work(n):
        for _ in range(3):
            mine = model.answer(path, "Describe the image.", max_tokens=n)
            seen.setdefault(n, []).append(model.timings is mine.timings)

    threads = [threading.Thread(target=work, args=(n,)) for n in (2, 5, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(all(same) for same in seen.values()) and len(seen) == 3  # no thread saw another's figures
    conv = model.chat(path)
    assert model.timings.image_prefill > 0  # the image's figures, before any question
    first, follow_up = conv.answer("How many circles?", max_tokens=3), conv.answer("And stars?", max_tokens=3)
    assert first.timings.image_prefill > 0 and follow_up.timings.image_prefill == 0


def test_sampling_with_temperature_is_seeded(model, scenes_dir):
    path = scenes_dir / "images" / "es0_000007.png"
    a = model.ask(path, "Describe the image.", max_tokens=10, temperature=1.0, seed=3)
    assert a == model.ask(path, "Describe the image.", max_tokens=10, temperature=1.0, seed=3)


def test_stop_strings_cut_the_answer_and_hold_back_their_start():
    from edgelmm.runtime.stop_strings import StopStrings

    stops = StopStrings(["<|end|>"])
    out = [stops.feed(p) for p in ("Two", " red<", "|en", "d|> more")]
    assert out == ["Two", " red", "", ""] and stops.stopped and stops.text == "Two red"
    stops = StopStrings(["<|end|>"])
    assert stops.feed("a <b") == "a <b" and stops.flush() == ""


def test_runtime_imports_neither_torch_nor_transformers(bundle, scenes_dir):
    code = ("import sys, edgelmm; m = edgelmm.load(sys.argv[1]); m.ask(sys.argv[2], 'How many?', max_tokens=2); "
            "print(sorted(n for n in ('torch', 'transformers') if n in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(bundle), str(scenes_dir / "images" / "es0_000000.png")],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_question_longer_than_the_context_is_a_user_error(bundle, scenes_dir):
    import edgelmm

    small = edgelmm.load(bundle, n_ctx=256)
    with pytest.raises(UserError, match=f"context holds {small.backend.n_ctx}"):
        small.ask(scenes_dir / "images" / "es0_000000.png", "circle " * 600)


def test_damaged_bundles_and_unknown_backends_are_user_errors(bundle, tmp_path):
    import shutil

    import edgelmm

    with pytest.raises(UserError, match="unknown backend 'onnx'"):
        edgelmm.load(bundle, backend="onnx")
    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    data = bytearray((broken / "vision.onnx").read_bytes())
    data[-1] ^= 1
    (broken / "vision.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="vision.onnx fails its sha256 check"):
        edgelmm.load(broken)
    (broken / "vision.onnx").unlink()
    with pytest.raises(BundleError, match="vision.onnx is missing"):
        edgelmm.load(broken)
    manifest = json.loads((bundle / MANIFEST).read_text())
    (broken / MANIFEST).write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(BundleError, match="upgrade edgelmm"):
        edgelmm.load(broken)


def test_load_without_a_model_uses_the_environment(bundle, monkeypatch, tmp_path):
    import edgelmm

    monkeypatch.setenv("EDGELMM_MODEL", str(bundle))
    assert edgelmm.load().path == bundle
    monkeypatch.setenv("EDGELMM_MODEL", str(tmp_path / "nowhere"))
    with pytest.raises(BundleError, match="not found"):
        edgelmm.load()


def run_cli(capture, monkeypatch, *args, stdin=""):
    import io

    from edgelmm import cli

    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = cli.main([str(a) for a in args])
    out, err = capture.readouterr()
    return code, out, err


def test_cli_ask_streams_the_answer_and_reports_timings(bundle, model, scenes_dir, capfd, monkeypatch):
    from edgelmm.runtime.confidence import unsure_prefix

    image = scenes_dir / "images" / "es0_000002.png"
    expected = model.ask(image, "How many circles are there?", max_tokens=6)
    capfd.readouterr()
    code, out, err = run_cli(capfd, monkeypatch, "ask", image, "How many circles are there?", "-m", bundle,
                             "--max-tokens", 6)
    # A random model is unsure of everything: the screen-reader sentence comes first.
    assert model.timings.first_token_probability < model.unsure_below
    assert code == 0 and out.strip() == unsure_prefix(expected) and err == ""  # llama.cpp stays quiet
    code, out, _ = run_cli(capfd, monkeypatch, "ask", image, "-", "-m", bundle, "--max-tokens", 6, "--json",
                           stdin="How many circles are there?\n")
    report = json.loads(out)
    assert code == 0 and report["answer"] == expected and report["unsure"] and 0 < report["confidence"] < 0.5
    assert set(report["timings"]) >= {"load", "image_encode", "prefill", "first_token", "tokens_per_second"}


def test_cli_chat_answers_each_line(bundle, model, scenes_dir, capsys, monkeypatch):
    from edgelmm.runtime.confidence import unsure_prefix

    image = scenes_dir / "images" / "es0_000002.png"
    conv = model.chat(image)
    expected = []
    for question in ("How many circles are there?", "What color is the star?"):
        text = conv.ask(question, max_tokens=5)
        unsure = model.timings.first_token_probability < model.unsure_below  # a random model mostly is
        expected.append(unsure_prefix(text) if unsure else text)
    code, out, _ = run_cli(capsys, monkeypatch, "chat", image, "-m", bundle, "--max-tokens", 5,
                           stdin="How many circles are there?\nWhat color is the star?\n\n")
    assert code == 0 and [line.strip() for line in out.splitlines()] == expected


@pytest.mark.parametrize("name, content, message", [
    ("missing.png", None, "image not found"), ("", None, "is a directory"), ("empty.png", b"", "empty"),
    ("text.png", b"hello", "not an image")])
def test_cli_ask_bad_images_exit_2_with_one_line(bundle, tmp_path, capsys, monkeypatch, name, content, message):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    code, out, err = run_cli(capsys, monkeypatch, "ask", tmp_path / name, "-m", bundle)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and out == ""


def test_cli_ask_bad_bundle_and_backend_exit_2(scenes_dir, tmp_path, capsys, monkeypatch):
    image = scenes_dir / "images" / "es0_000002.png"
    code, _, err = run_cli(capsys, monkeypatch, "ask", image, "-m", tmp_path)
    assert code == 2 and "not an edgelmm bundle" in err
    code, _, err = run_cli(capsys, monkeypatch, "ask", image, "--backend", "onnx")
    assert code == 2 and "onnx" in err


def test_cli_eval_runs_a_bundle_through_either_backend(bundle, checkpoint, scenes_dir, tmp_path, capsys, monkeypatch):
    reports = {}
    for backend in ("llamacpp", "torch"):
        out_file = tmp_path / f"{backend}.json"
        code, out, _ = run_cli(capsys, monkeypatch, "eval", bundle, "--data", scenes_dir / "eval.json", "--limit", 20,
                               "--backend", backend, "--json", out_file, "-q")
        assert code == 0 and "exact match" in out
        reports[backend] = json.loads(out_file.read_text())
    assert reports["llamacpp"]["n"] == 20
    same = sum(a["prediction"] == b["prediction"]
               for a, b in zip(reports["llamacpp"]["predictions"], reports["torch"]["predictions"]))
    assert same >= 19
    code, _, err = run_cli(capsys, monkeypatch, "eval", checkpoint, "--data", scenes_dir / "eval.json",
                           "--backend", "llamacpp")
    assert code == 2 and "export it to a bundle" in err
