import json

from edgelmm import __version__, cli


def run(capsys, *args):
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_version(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"edgelmm, version {__version__}"


def test_presets_table_and_json(capsys):
    code, out, _ = run(capsys, "presets")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["preset", "vision", "projector", "lm"]
    assert [line.split()[0] for line in lines[1:]] == ["tiny", "demo", "llava-phi3-mini", "llava-qwen2-0.5b"]
    code, out, _ = run(capsys, "presets", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["llava-phi3-mini"]["image_tokens"] == 576
    assert rows["llava-qwen2-0.5b"]["vision"] == "siglip"


def test_unknown_flag_is_one_line_and_exit_2(capsys):
    code, out, err = run(capsys, "presets", "--bogus")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("edgelmm: error: No such option")


def test_bad_value_is_exit_2(capsys):
    code, _, err = run(capsys, "data", "synth", "--out", "x", "--n-images", "0")
    assert code == 2 and "--n-images" in err and err.count("\n") == 1


def test_unknown_command_is_exit_2(capsys):
    code, _, err = run(capsys, "nope")
    assert code == 2 and "No such command" in err


def test_data_synth_writes_all_outputs(capsys, tmp_path):
    out_dir = tmp_path / "es"
    code, out, _ = run(capsys, "data", "synth", "--out", str(out_dir), "--n-images", "6", "--seed", "3", "-q")
    assert code == 0, out
    assert {p.name for p in out_dir.iterdir()} == {"images", "scenes.json", "stage1.json", "stage2.json", "eval.json"}
    assert len(list((out_dir / "images").glob("*.png"))) == 6
    # An existing output is kept unless --force is given.
    code, _, err = run(capsys, "data", "synth", "--out", str(out_dir), "--n-images", "2", "-q")
    assert code == 2 and "--force" in err
    assert len(list((out_dir / "images").glob("*.png"))) == 6
    code, _, _ = run(capsys, "data", "synth", "--out", str(out_dir), "--n-images", "2", "-q", "--force")
    assert code == 0 and len(list((out_dir / "images").glob("*.png"))) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["es"]  # no temporary folders left behind


def test_internal_error_is_exit_1_without_traceback(capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("edgelmm.data.edgescenes.synthesize", broken)
    code, _, err = run(capsys, "data", "synth", "--out", "unused", "-q")
    assert code == 1 and "internal error: RuntimeError: boom" in err and "Traceback" not in err
    code, _, err = run(capsys, "-v", "data", "synth", "--out", "unused", "-q")
    assert code == 1 and "Traceback" in err


def test_console_exit_codes_reach_the_shell():
    import subprocess
    import sys

    bad = subprocess.run([sys.executable, "-m", "edgelmm", "--bogus"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("edgelmm: error:") and "Traceback" not in bad.stderr
    ok = subprocess.run([sys.executable, "-m", "edgelmm", "--version"], capture_output=True, text=True)
    assert ok.returncode == 0


def test_unwritable_output_is_a_user_error(capsys, tmp_path):
    (tmp_path / "file").write_text("x")
    code, _, err = run(capsys, "data", "synth", "--out", str(tmp_path / "file" / "es"), "--n-images", "1", "-q")
    assert code == 2 and err.startswith("edgelmm: error: cannot write to") and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_build_writes_a_checkpoint(capsys, tmp_path):
    code, out, err = run(capsys, "build", "--preset", "tiny", "--projector", "ldpv2", "--projector-arg", "pool=2",
                         "--out", str(tmp_path / "ckpt"))
    assert code == 0, err
    assert "4 image tokens" in out
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["projector_type"] == "ldpv2" and config["projector_args"] == {"pool": 2}
    code, _, err = run(capsys, "build", "--preset", "tiny", "--projector-arg", "pool", "--out", str(tmp_path / "x"))
    assert code == 2 and "KEY=INT" in err
    code, _, err = run(capsys, "build", "--preset", "nope", "--out", str(tmp_path / "y"))
    assert code == 2 and "unknown preset 'nope'" in err


def test_train_needs_a_stage_and_its_data(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--data", str(tmp_path), "--out", str(tmp_path / "o"))
    assert code == 2 and "--stage" in err
    code, _, err = run(capsys, "train", "--stage", "warp", "--data", str(tmp_path), "--out", str(tmp_path / "o"))
    assert code == 2 and "unknown training stage 'warp'" in err
    code, _, err = run(capsys, "train", "recipe", "--preset", "tiny", "--data", str(tmp_path))
    assert code == 2 and "Missing option '--out'" in err
    code, _, err = run(capsys, "train", "--stage", "clip", "--preset", "tiny", "--data", str(tmp_path),
                       "--out", str(tmp_path / "o"))
    assert code == 2 and "missing" in err and "stage1.json" in err
