"""Speaking an answer offline through the system's voice (`ask --speak`, `--speak-to answer.wav`).

pyttsx3 drives the platform's own engine: espeak-ng on Linux (Debian: `apt install espeak-ng`), the
native voices on macOS and Windows. Optional: `pip install 'edgelmm[speech]'`. A missing package or
voice is one clear error naming what to install. A WAV is written under a temporary name and renamed
when complete, so a failed run leaves no half-written file.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

from edgelmm.errors import UserError, first_line

INSTALL = ("pip install 'edgelmm[speech]', and on Linux the espeak-ng voice "
           "(Debian/Ubuntu: apt install espeak-ng)")


def voice_engine():
    try:
        import pyttsx3
    except ImportError:
        raise UserError(f"speaking needs a voice engine: {INSTALL}") from None
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return pyttsx3.init()
    except Exception as e:  # pyttsx3 raises what its driver meets: a missing library, no voice
        raise UserError(f"no voice engine could start ({first_line(e)}): {INSTALL}") from None


# Linux: pyttsx3's espeak driver plays through `aplay` and says nothing when that is missing, so
# edgelmm writes the WAV itself and plays it with the first player it finds, reporting a failure.
LINUX_PLAYERS = (["aplay", "-q"], ["paplay"], ["pw-play"])


def _player() -> list[str]:
    player = next((cmd for cmd in LINUX_PLAYERS if shutil.which(cmd[0])), None)
    if player is None:
        raise UserError("no audio player to speak through: install alsa-utils (aplay) or pulseaudio-utils (paplay)")
    return player


def check_speech(aloud: bool) -> None:
    """Raise the error speaking would meet (no package, no voice, no player), before any work is done."""
    voice_engine()
    if aloud and sys.platform.startswith("linux"):
        _player()


def speak(text: str) -> None:
    """Say `text` aloud and return when it has been said."""
    if not sys.platform.startswith("linux"):
        engine = voice_engine()
        with contextlib.redirect_stdout(io.StringIO()):  # drivers print progress on stdout, the answer's place
            engine.say(text)
            engine.runAndWait()
        return
    player = _player()
    with tempfile.TemporaryDirectory() as folder:
        wav = speak_to(text, Path(folder) / "answer.wav")
        played = subprocess.run([*player, str(wav)], capture_output=True, text=True)
    if played.returncode != 0:
        raise UserError(f"{player[0]} could not play the answer: {first_line(Exception(played.stderr))}")


def speak_to(text: str, path: str | Path) -> Path:
    """Write `text`, spoken, to the WAV file `path`."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder, not a WAV file to write")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.wav")
    engine = voice_engine()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            engine.save_to_file(text, str(tmp))
            engine.runAndWait()
        try:
            with wave.open(str(tmp)) as w:
                if w.getnframes() == 0:
                    raise UserError("the voice engine wrote no sound")
        except (wave.Error, EOFError, FileNotFoundError):
            raise UserError("the voice engine wrote no valid WAV file") from None
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
