"""Speaking answers: a real WAV from the system's voice (espeak-ng through pyttsx3, which .ci/run
installs), and one clear error when a voice, a package or a player is missing."""

from __future__ import annotations

import sys
import wave
from pathlib import Path

import pytest

from test_runtime import run_cli

PHOTO = Path(__file__).resolve().parent.parent / "examples" / "es7_000002.png"


def _voice_or_skip():
    from edgelmm.errors import UserError
    from edgelmm.speech import voice_engine

    try:
        voice_engine()
    except UserError as e:
        pytest.skip(f"no voice engine here: {e}")


def test_speak_to_writes_the_spoken_answer_as_a_wav(tmp_path, capfd, monkeypatch):
    _voice_or_skip()
    out = tmp_path / "answer.wav"
    code, stdout, _ = run_cli(capfd, monkeypatch, "ask", PHOTO, "How many circles are there?", "--speak-to", out,
                              "--threads", "1")
    import edgelmm

    model = edgelmm.load(n_threads=1)
    expected = model.ask(PHOTO, "How many circles are there?")
    model.close()
    assert code == 0 and stdout.strip() == expected  # the voice engine's chatter stays out
    with wave.open(str(out)) as w:
        assert w.getnframes() > w.getframerate() // 2  # more than half a second of speech
    assert [p.name for p in tmp_path.iterdir()] == ["answer.wav"]  # no temporary file left


def test_missing_voice_package_or_folder_target_is_one_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyttsx3", None)  # as if `edgelmm[speech]` were not installed
    code, out, err = run_cli(capsys, monkeypatch, "ask", PHOTO, "--speak-to", tmp_path / "a.wav")
    assert code == 2 and out == "" and "pip install 'edgelmm[speech]'" in err and "espeak-ng" in err
    monkeypatch.undo()
    _voice_or_skip()
    code, _, err = run_cli(capsys, monkeypatch, "ask", PHOTO, "--speak-to", tmp_path)
    assert code == 2 and "is a directory" in err  # click refuses it before anything runs


def test_speaking_aloud_without_an_audio_player_says_what_to_install(capsys, monkeypatch):
    _voice_or_skip()
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.setattr("sys.platform", "linux")
    code, out, err = run_cli(capsys, monkeypatch, "ask", PHOTO, "--speak")
    assert code == 2 and out == "" and "install alsa-utils" in err  # before the model answers
