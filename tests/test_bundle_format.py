"""The typed bundle format: every malformed manifest is one error naming its field, files stay inside the
bundle folder, and the committed JSON Schema is the one the declarations give."""

import json
import os
import shutil
from pathlib import Path

import pytest

from edgelmm.bundle_format import (MANIFEST, BundleError, Manifest, check_files, json_schema, load_manifest,
                                   save_manifest)

DEMO = Path(__file__).resolve().parent.parent / "edgelmm" / "models" / "demo"
SCHEMA = Path(__file__).resolve().parent.parent / "docs" / "bundle.schema.json"


def _demo() -> dict:
    return json.loads((DEMO / MANIFEST).read_text())


def test_the_demo_manifest_reads_and_writes_back_byte_for_byte(tmp_path):
    manifest = load_manifest(DEMO)
    assert manifest.vision.output.tokens == 64 and manifest.lm.architecture == "phi3"
    assert manifest.path(DEMO, "lm") == (DEMO / "lm-q4_k_m.gguf").resolve()
    save_manifest(tmp_path, manifest)
    assert (tmp_path / MANIFEST).read_text() == (DEMO / MANIFEST).read_text()
    assert not [p for p in tmp_path.iterdir() if p.name != MANIFEST]  # no temporary file left behind


def _edit(data: dict, dotted: str, value) -> dict:
    *parents, last = dotted.split(".")
    node = data
    for key in parents:
        node = node[key]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return data


@pytest.mark.parametrize("field, value, message", [
    ("prompt", KeyError, "field prompt is missing"),
    ("lm", KeyError, "field lm is missing"),
    ("files", [], "field files must be an object"),
    ("files.lm", KeyError, "no lm file"),
    ("lm.context_length", "512", "lm.context_length must be an integer"),
    ("lm.context_length", 0, "lm.context_length must be at least 1"),
    ("vision.input.size", 0, "vision.input.size must be at least 1"),
    ("vision.input.size", -3, "vision.input.size must be at least 1"),
    ("vision.input.size", 10 ** 9, "vision.input.size must be at most 4096"),
    ("vision.input.std", [0.5, 0, 0.5], "vision.input.std must not hold 0"),
    ("vision.input.mean", [0.5], "vision.input.mean must hold 3 values"),
    ("vision.input.resize", "stretch", "vision.input.resize must be one of"),
    ("generation.temperature", float("nan"), "generation.temperature must be a finite number"),
    ("files.lm.sha256", "abc", "files.lm.sha256 is malformed"),
    ("prompt.image_placeholder", "", "prompt.image_placeholder must not be empty"),
    ("lm.vocab_size", True, "lm.vocab_size must be an integer"),
])
def test_a_malformed_manifest_is_one_error_naming_the_field(field, value, message):
    with pytest.raises(BundleError, match=message):
        Manifest.from_dict(_edit(_demo(), field, value))


def test_unknown_fields_are_ignored_and_newer_formats_refused(tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(DEMO, bundle)
    data = {**_demo(), "importance": {"output": "scores"}}
    (bundle / MANIFEST).write_text(json.dumps(data))
    assert load_manifest(bundle).lm.vocab_size == 768  # an optional addition of a later edgelmm
    (bundle / MANIFEST).write_text(json.dumps({**data, "format_version": 2}))
    with pytest.raises(BundleError, match="bundle format 2; this edgelmm reads up to 1: upgrade edgelmm"):
        load_manifest(bundle)


@pytest.mark.parametrize("name", ["../secret.gguf", "/etc/passwd", "sub/../../x", "a\\..\\b", ""])
def test_file_names_that_leave_the_bundle_are_refused(tmp_path, name):
    bundle = tmp_path / "b"
    shutil.copytree(DEMO, bundle)
    manifest = Manifest.from_dict(_edit(_demo(), "files.lm.path", name))
    with pytest.raises(BundleError, match="bundle file"):
        manifest.path(bundle, "lm")
    assert any(problem.startswith("lm: bundle file") for problem in check_files(bundle, manifest))


def test_a_link_out_of_the_bundle_is_refused(tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(DEMO, bundle)
    outside = tmp_path / "outside.gguf"
    shutil.move(bundle / "lm-q4_k_m.gguf", outside)
    os.symlink(outside, bundle / "lm-q4_k_m.gguf")
    manifest = load_manifest(bundle)
    with pytest.raises(BundleError, match="leads outside the bundle folder"):
        manifest.path(bundle, "lm")


def test_the_committed_schema_is_current_and_accepts_the_demo_manifest():
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    assert schema == json_schema(), "docs/bundle.schema.json is stale: regenerate it from edgelmm.bundle_format"
    jsonschema.validate(_demo(), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(_edit(_demo(), "vision.input.size", 0), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(_edit(_demo(), "files.vision", KeyError), schema)


def test_cli_verify_names_the_bad_field(tmp_path, capsys, monkeypatch):
    from test_runtime import run_cli

    bundle = tmp_path / "b"
    shutil.copytree(DEMO, bundle)
    (bundle / MANIFEST).write_text(json.dumps(_edit(_demo(), "prompt", KeyError)))
    for command in ("verify", "show"):
        code, _, err = run_cli(capsys, monkeypatch, command, bundle)
        assert code == 2 and "manifest field prompt is missing" in err and len(err.strip().splitlines()) == 1
