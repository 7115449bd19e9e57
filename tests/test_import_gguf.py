"""`edgelmm import gguf|ollama`: llama.cpp pairs written by our own exporter (an LM GGUF and an mmproj)
come back as bundles whose vision graph matches the original's and whose answers are the original's;
a store laid out as Ollama lays it out is read; bad pairs fail with one line and leave nothing."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch

from edgelmm.imaging import ImageSpec
from edgelmm.modeling import build_model
from edgelmm.modeling.vision_towers import VISION_ARCHS
from test_runtime import run_cli

QUESTIONS = ["What is in front of me?", "How many circles are there?", "What colour is the square?"]


def _export(parts, folder):
    from edgelmm.export.bundle import write_bundle

    return write_bundle(parts, folder, quant="f32", vision="fp32", mmproj=True)


def _cosine(a, b) -> float:
    return float(a.ravel() @ b.ravel() / np.linalg.norm(a) / np.linalg.norm(b))


def _onnx_embeddings(bundle, rgb):
    import onnxruntime as ort

    from edgelmm.bundle_format import load_manifest
    from edgelmm.imaging import preprocess

    spec = ImageSpec.from_dict(load_manifest(bundle).vision.input.__dict__)
    session = ort.InferenceSession(str(bundle / "vision.onnx"), providers=["CPUExecutionProvider"])
    return session.run(None, {"pixel_values": preprocess(rgb, spec)[None]})[0][0]


def _llama_cpp_embeddings(bundle, rgb, width):
    import llama_cpp

    from edgelmm.bundle_format import load_manifest
    from edgelmm.runtime.mtmd import MtmdVision

    manifest = load_manifest(bundle)
    llm = llama_cpp.Llama(str(manifest.path(bundle, "lm")), n_ctx=64, n_threads=1, verbose=False)
    try:
        return MtmdVision(manifest.path(bundle, "mmproj"), llm.model).encode(rgb, width)
    finally:
        llm.close()


def _answers(bundle, rgb) -> list[str]:
    import edgelmm

    model = edgelmm.load(bundle, n_threads=1)
    try:
        return [model.ask(rgb, q, max_tokens=16) for q in QUESTIONS]
    finally:
        model.close()


@pytest.fixture(scope="module")
def clip_pair(checkpoint, tmp_path_factory):
    """The tiny CLIP model's bundle, with its mmproj."""
    from edgelmm.modeling import load_checkpoint

    return _export(load_checkpoint(checkpoint), tmp_path_factory.mktemp("clip") / "original")


@pytest.fixture(scope="module")
def siglip_pair(tmp_path_factory):
    """A tiny model with a SigLIP tower, told to normalize with CLIP's mean and std: its letterbox
    padding is then the colour llama.cpp pads with, and both sides see the same pixels."""
    from transformers import SiglipVisionConfig, SiglipVisionModel

    folder = tmp_path_factory.mktemp("siglip")
    torch.manual_seed(0)
    SiglipVisionModel(SiglipVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                                         num_attention_heads=2, image_size=32, patch_size=8,
                                         hidden_act="gelu_pytorch_tanh")).save_pretrained(folder / "tower")
    parts = build_model(vision=str(folder / "tower"), llm="tiny")
    clip = VISION_ARCHS.get("clip")
    parts = dataclasses.replace(parts, image_spec=ImageSpec(size=32, resize="squash", mean=clip.image_mean,
                                                            std=clip.image_std))
    return _export(parts, folder / "original")


@pytest.fixture(scope="module")
def imported_clip(clip_pair, tmp_path_factory):
    from edgelmm.importers.gguf_pair import import_gguf

    return import_gguf(clip_pair / "lm-f32.gguf", clip_pair / "mmproj-f16.gguf",
                       tmp_path_factory.mktemp("imported") / "clip")


def _square_image(seed=0):
    # At the tower's own size every resize rule gives the same pixels: only the graphs are compared.
    return np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)


def test_a_clip_pair_round_trips_with_the_original_embeddings_and_answers(clip_pair, imported_clip):
    from edgelmm.bundle_format import load_manifest
    from edgelmm.export.verify import verify_bundle

    manifest = load_manifest(imported_clip)
    assert set(manifest.files) == {"vision", "lm", "mmproj"}
    assert manifest.vision.input.resize == "letterbox" and manifest.vision.output.importance
    assert (manifest.lm.architecture, manifest.lm.quant) == ("phi3", "f32")
    original = load_manifest(clip_pair)
    assert manifest.prompt.chat_template == original.prompt.chat_template
    assert manifest.prompt.stop == original.prompt.stop and manifest.prompt.bos == original.prompt.bos
    assert verify_bundle(imported_clip) == []
    for seed in range(3):
        rgb = _square_image(seed)
        assert _cosine(_onnx_embeddings(clip_pair, rgb), _onnx_embeddings(imported_clip, rgb)) >= 0.9999
    assert _answers(imported_clip, _square_image()) == _answers(clip_pair, _square_image())


def test_the_imported_clip_tower_keeps_hugging_faces_cls_layout_not_llama_cpps(clip_pair, imported_clip):
    """llama.cpp appends CLS after the patches and reads rows 1..N (llama.cpp #25814); the imported
    graph computes the features the model was trained with, as the original export does."""
    rgb = _square_image()
    ours, original = _onnx_embeddings(imported_clip, rgb), _onnx_embeddings(clip_pair, rgb)
    theirs = _llama_cpp_embeddings(imported_clip, rgb, ours.shape[1])
    assert theirs.shape == ours.shape
    assert _cosine(ours, original) >= 0.9999 > _cosine(theirs, original)


def test_a_siglip_pair_matches_llama_cpp_including_its_letterbox(siglip_pair, tmp_path):
    from edgelmm.importers.gguf_pair import import_gguf

    bundle = import_gguf(siglip_pair / "lm-f32.gguf", siglip_pair / "mmproj-f16.gguf", tmp_path / "b")
    square = _square_image()
    assert _cosine(_onnx_embeddings(siglip_pair, square), _onnx_embeddings(bundle, square)) >= 0.9999
    assert _answers(bundle, square) == _answers(siglip_pair, square)
    # A wide photo: llama.cpp letterboxes it (bicubic, padded with the mean colour); so does the bundle.
    wide = np.random.default_rng(1).integers(0, 256, (30, 75, 3), dtype=np.uint8)
    ours = _onnx_embeddings(bundle, wide)
    assert _cosine(ours, _llama_cpp_embeddings(bundle, wide, ours.shape[1])) >= 0.999


def test_cli_import_gguf_with_link_and_a_named_template(clip_pair, tmp_path, capsys, monkeypatch):
    from edgelmm.bundle_format import load_manifest
    from edgelmm.chat_templates import TEMPLATES

    out = tmp_path / "linked"
    code, stdout, _ = run_cli(capsys, monkeypatch, "import", "gguf", clip_pair / "lm-f32.gguf",
                              clip_pair / "mmproj-f16.gguf", "--out", out, "--link", "--template", "chatml")
    assert code == 0 and f"wrote bundle {out}" in stdout
    assert (out / "lm-f32.gguf").stat().st_ino == (clip_pair / "lm-f32.gguf").stat().st_ino
    prompt = load_manifest(out).prompt
    assert prompt.chat_template == TEMPLATES["chatml"].template and "<|im_end|>" in prompt.stop
    assert run_cli(capsys, monkeypatch, "verify", out)[0] == 0


@pytest.mark.parametrize("name", ["phi3", "chatml", "llama3", "vicuna"])
def test_named_templates_render_a_conversation(name):
    from edgelmm.chat import ChatFormat
    from edgelmm.chat_templates import TEMPLATES

    chat = ChatFormat(template=TEMPLATES[name].template, bos="<s>", eos="</s>").checked()
    text = chat.render_text([("q1", "a1"), ("q2", None)])
    assert text.startswith("<s>") and text.index("q1") < text.index("a1") < text.index("q2")


# ---- bad pairs -------------------------------------------------------------------------------------

def _error_line(stderr: str) -> str:
    """The one error line after the progress lines; no traceback."""
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr and [x for x in lines if x.startswith("edgelmm:")] == lines[-1:], stderr
    return lines[-1]


def _gguf(path, arch: str, **fields):
    """A small GGUF file with `fields` (key -> value) and one tensor."""
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), arch)
    for key, value in fields.items():
        writer.add_key_value(key, value[0], value[1])
    writer.add_tensor("t", np.zeros(4, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _lm_without_template(folder):
    from edgelmm.export.gguf_lm import export_gguf

    torch.manual_seed(0)
    parts = build_model("tiny")
    parts.tokenizer.chat_template = None
    return export_gguf(parts, folder / "lm.gguf", dtype="f32")


def test_bad_pairs_fail_with_one_line_and_write_nothing(clip_pair, tmp_path, capsys, monkeypatch):
    from gguf import GGUFValueType

    lm, mmproj = clip_pair / "lm-f32.gguf", clip_pair / "mmproj-f16.gguf"
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(mmproj.read_bytes()[:5000])
    ldp = _gguf(tmp_path / "ldp.gguf", "clip", **{"clip.has_vision_encoder": (True, GGUFValueType.BOOL),
                                                 "clip.projector_type": ("ldp", GGUFValueType.STRING)})
    no_tokens = _gguf(tmp_path / "notok.gguf", "llama")
    wrong_width = _gguf(tmp_path / "w.gguf", "llama", **{
        "llama.embedding_length": (96, GGUFValueType.UINT32), "llama.context_length": (64, GGUFValueType.UINT32),
        "tokenizer.ggml.tokens": (["a", "b"], GGUFValueType.ARRAY)})
    no_template = _lm_without_template(tmp_path)
    cases = [
        ((mmproj, lm), "is an mmproj (vision) GGUF, not a language model"),
        ((lm, lm), "is not an mmproj GGUF"),
        ((lm, truncated), "is not a readable GGUF file"),
        ((lm, ldp), "the 'ldp' projector is not supported"),
        ((no_tokens, mmproj), "has no tokenizer"),
        ((wrong_width, mmproj), "makes 64-wide image embeddings but w.gguf reads 96-wide ones"),
        ((no_template, mmproj), "has no chat template; give one with --template NAME|FILE"),
        ((tmp_path / "missing.gguf", mmproj), "no such file"),
    ]
    for (first, second), message in cases:
        out = tmp_path / "out"
        code, _, err = run_cli(capsys, monkeypatch, "import", "gguf", first, second, "--out", out)
        assert code == 2 and message in _error_line(err), (message, err)
        assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))
    code, _, err = run_cli(capsys, monkeypatch, "import", "gguf", no_template, mmproj, "--out", tmp_path / "t",
                           "--template", "nonesuch")
    assert code == 2 and "neither a template name" in err
    assert run_cli(capsys, monkeypatch, "import", "gguf", no_template, mmproj, "--out", tmp_path / "t",
                   "--template", "phi3")[0] == 0


# ---- Ollama ----------------------------------------------------------------------------------------

def _blob(store, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    (store / "blobs").mkdir(parents=True, exist_ok=True)
    (store / "blobs" / f"sha256-{digest}").write_bytes(data)
    return f"sha256:{digest}"


def _ollama_store(store, lm, mmproj, name=("library", "tinyllava", "latest"), **texts):
    """A model in a store laid out as Ollama lays it out: content-addressed blobs and a manifest."""
    media = "application/vnd.ollama.image."
    layers = [{"mediaType": media + "model", "digest": _blob(store, lm.read_bytes())},
              {"mediaType": media + "projector", "digest": _blob(store, mmproj.read_bytes())}]
    for kind, text in texts.items():
        layers.append({"mediaType": media + kind, "digest": _blob(store, text.encode())})
    for layer in layers:
        layer["size"] = (store / "blobs" / layer["digest"].replace(":", "-")).stat().st_size
    config = _blob(store, b"{}")
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config,
                           "size": 2}, "layers": layers}
    path = store / "manifests" / "registry.ollama.ai" / name[0] / name[1] / name[2]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest))
    return store


def test_import_ollama_reads_a_store_laid_out_as_ollamas(clip_pair, tmp_path, capsys, monkeypatch):
    from edgelmm.bundle_format import load_manifest

    store = _ollama_store(tmp_path / "models", clip_pair / "lm-f32.gguf", clip_pair / "mmproj-f16.gguf",
                          template="{{ .System }}<|user|>\n{{ .Prompt }}<|end|>\n<|assistant|>\n",
                          system="Describe what a blind person needs to know.",
                          params=json.dumps({"stop": ["<|user|>"], "temperature": 0}))
    monkeypatch.setenv("OLLAMA_MODELS", str(store))
    out = tmp_path / "b"
    code, _, err = run_cli(capsys, monkeypatch, "import", "ollama", "tinyllava", "--out", out)
    assert code == 0, err
    prompt = load_manifest(out).prompt
    assert prompt.system_prompt == "Describe what a blind person needs to know." and "<|user|>" in prompt.stop
    assert load_manifest(out).provenance.source_checkpoint == "ollama:tinyllava"
    assert _cosine(_onnx_embeddings(out, _square_image()), _onnx_embeddings(clip_pair, _square_image())) >= 0.9999


def test_import_ollama_refuses_bad_names_damaged_blobs_and_models_without_vision(clip_pair, tmp_path, capsys,
                                                                                  monkeypatch):
    store = _ollama_store(tmp_path / "models", clip_pair / "lm-f32.gguf", clip_pair / "mmproj-f16.gguf")
    no_template = _lm_without_template(tmp_path)
    _ollama_store(store, no_template, clip_pair / "mmproj-f16.gguf", name=("library", "notemplate", "v1"),
                  template="<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n")
    blob = next(p for p in (store / "blobs").iterdir() if p.stat().st_size == (clip_pair / "lm-f32.gguf").stat().st_size)
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    _ollama_store(damaged, clip_pair / "lm-f32.gguf", clip_pair / "mmproj-f16.gguf")
    damaged_blob = damaged / "blobs" / blob.name
    data = bytearray(damaged_blob.read_bytes())
    data[-1] ^= 1
    damaged_blob.write_bytes(bytes(data))
    cases = [
        ((store, "../../etc/passwd"), "is not an Ollama model name"),
        ((store, "nonesuch"), "no model 'nonesuch' in the Ollama store"),
        ((store, "notemplate:v1"), "has no chat template; give one with --template NAME|FILE (names: phi3, "
                                   "chatml, llama3, vicuna); Ollama's own template looks like 'chatml'"),
        ((damaged, "tinyllava"), "the lm file's sha256 is"),
    ]
    for (where, name), message in cases:
        out = tmp_path / "out"
        code, _, err = run_cli(capsys, monkeypatch, "import", "ollama", name, "--store", where, "--out", out)
        assert code == 2 and message in _error_line(err), (message, err)
        assert not out.exists()
    text_only = tmp_path / "textonly"
    _ollama_store(text_only, clip_pair / "lm-f32.gguf", clip_pair / "mmproj-f16.gguf")
    manifest = text_only / "manifests" / "registry.ollama.ai" / "library" / "tinyllava" / "latest"
    layers = json.loads(manifest.read_text())
    layers["layers"] = [x for x in layers["layers"] if not x["mediaType"].endswith("projector")]
    manifest.write_text(json.dumps(layers))
    code, _, err = run_cli(capsys, monkeypatch, "import", "ollama", "tinyllava", "--store", text_only, "--out",
                           tmp_path / "out")
    assert code == 2 and "has no projector (mmproj) layer" in err
