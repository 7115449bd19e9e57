"""`edgelmm ask`, `edgelmm chat` and `edgelmm calibrate`: answering questions about images."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from edgelmm import options
from edgelmm.cli.app import Checked, app
from edgelmm.errors import UserError


EXIT_BAD_PHOTO = 3  # --strict-quality: the photo was not good enough to answer about
MORE = ("more", "tell me more", "details")  # in `chat`: the bundle's request for details


def _runtime_options(command):
    """Options shared by `ask` and `chat`."""
    for option in reversed([
        click.option("--model", "-m", "model_path", type=click.Path(), help="Bundle folder [default: $EDGELMM_MODEL, "
                     "else the built-in demo model]."),
        click.option("--backend", default="auto", show_default=True,
                     help="llamacpp, torch, or one an installed package adds (auto: llamacpp)."),
        click.option("--max-tokens", default=256, show_default=True, type=Checked(int, options.check_max_tokens)),
        click.option("--temperature", default=0.0, show_default=True, type=Checked(float, options.check_temperature)),
        click.option("--threads", type=Checked(int, options.check_threads),
                     help="CPU threads [default: one per physical core]."),
        click.option("--ctx", "n_ctx", type=Checked(int, options.check_n_ctx),
                     help="A fixed context in positions [default: "
                     "sized to the question, growing with a conversation]."),
        click.option("--image-tokens", type=int, help="Read only this many image tokens, the most important "
                     "[default: all]."),
        click.option("--merge", default=0, show_default=True, type=int,
                     help="Of --image-tokens, how many merge the tokens left out."),
        click.option("--ttft-budget", type=Checked(float, options.check_budget),
                     help="Seconds to the first word: read the most image tokens "
                     "that fit (measured on this machine at first use)."),
        click.option("-v", "--verbose", is_flag=True, help="Show library logs and tracebacks."),
    ]):
        command = option(command)
    return command


def _open_model(ctx: click.Context, model_path, backend, threads, n_ctx, image_tokens, merge, ttft_budget, verbose):
    from edgelmm.runtime import load

    ctx.obj["verbose"] = ctx.obj["verbose"] or verbose
    return load(model_path, backend=backend, n_threads=threads, n_ctx=n_ctx, image_tokens=image_tokens,
                merge=merge, ttft_budget=ttft_budget, verbose=ctx.obj["verbose"])


def _stdin():
    """Standard input as bytes where it has them (a terminal, a pipe), so that text is decoded here."""
    return getattr(sys.stdin, "buffer", sys.stdin)


def _decoded(text: bytes | str) -> str:
    if isinstance(text, str):
        return text
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError("the question is not valid UTF-8 text") from None


@app.command()
@click.argument("image", type=click.Path())
@click.argument("question", required=False)
@_runtime_options
@click.option("--json", "as_json", is_flag=True, help="Print the answer, timings and photo findings as JSON.")
@click.option("--strict-quality", is_flag=True,
              help="Answer nothing (exit code 3) when the photo looks blurred, dark, washed out or cut off.")
@click.option("--ocr", "use_ocr", is_flag=True,
              help="Read the photo's text first and give its words to the model with the question.")
@click.option("--speak", is_flag=True, help="Also say the answer aloud with the system's voice (offline).")
@click.option("--speak-to", type=click.Path(dir_okay=False), help="Also write the spoken answer to this WAV file.")
@click.pass_context
def ask(ctx: click.Context, image: str, question: str | None, max_tokens, temperature, as_json, strict_quality,
        use_ocr, speak, speak_to, **runtime) -> None:
    """Answer QUESTION about IMAGE ("-" reads it from stdin). Without one, describe the image (with the
    bundle's description prompt). A hint comes first when the photo looks bad."""
    from edgelmm.imaging import open_image
    from edgelmm.quality import check_photo
    from edgelmm.runtime.confidence import confidence, is_unsure, unsure_prefix

    if question == "-":
        question = _decoded(_stdin().read()).strip()
    photo = open_image(image)  # decoded once, for the check, the OCR and the model
    findings = check_photo(photo)
    said = _Speaker(speak, speak_to)
    if strict_quality and findings:
        hints = "\n".join(f.hint for f in findings)
        if as_json:
            click.echo(json.dumps({"answer": None, "photo": [f.to_dict() for f in findings]}))
        else:
            click.echo(hints)
        said(hints)
        ctx.exit(EXIT_BAD_PHOTO)
    model = _open_model(ctx, **runtime)
    if use_ocr:
        from edgelmm.ocr import read_text, reference_tokens

        reference = reference_tokens(read_text(photo))
        question = f"{question or model.describe_prompt}\n{reference}" if reference else question
    if as_json:
        answer = model.answer(photo, question, max_tokens=max_tokens, temperature=temperature)
        sure = confidence(answer.timings.first_token_probability, len(findings))
        unsure = is_unsure(sure, model.unsure_below)
        click.echo(json.dumps({**answer.to_dict(), "photo": [f.to_dict() for f in findings], "confidence": sure,
                               "unsure": unsure, "model": str(model.path), "backend": model.backend.info()}))
        said(" ".join([*(f.hint for f in findings), unsure_prefix(answer.text) if unsure else answer.text]))
        return
    for finding in findings:  # a plain sentence before the answer, as a screen reader reads it
        click.echo(finding.hint)
    text = _stream(model, model.ask(photo, question, max_tokens=max_tokens, temperature=temperature, stream=True),
                   len(findings))
    said(" ".join([*(f.hint for f in findings), text]))


class _Speaker:
    """Says the final text aloud and/or into a WAV file, as asked (nothing when neither is)."""

    def __init__(self, aloud: bool, wav: str | None) -> None:
        self.aloud, self.wav = aloud, wav
        if aloud or wav:
            from edgelmm.speech import check_speech

            check_speech(aloud)  # a missing voice is an error before the model loads, not after the answer

    def __call__(self, text: str) -> None:
        from edgelmm.speech import speak, speak_to

        if self.wav:
            speak_to(text, self.wav)
        if self.aloud:
            speak(text)


def _stream(model, chunks, photo_findings: int = 0) -> str:
    """Print an answer as it comes, said to be unsure first where its confidence is low; returns what
    was printed."""
    from edgelmm.runtime.confidence import confidence, is_unsure, unsure_prefix

    printed = []
    for k, chunk in enumerate(chunks):
        if k == 0:
            sure = confidence(model.timings.first_token_probability, photo_findings)
            if is_unsure(sure, model.unsure_below):
                chunk = unsure_prefix(chunk)
        click.echo(chunk, nl=False)
        printed.append(chunk)
        sys.stdout.flush()
    click.echo()
    return "".join(printed)


@app.command()
@click.argument("image", type=click.Path())
@_runtime_options
@click.pass_context
@click.option("--describe", is_flag=True, help="Begin with a short description of the image.")
def chat(ctx: click.Context, image: str, max_tokens, temperature, describe, **runtime) -> None:
    """A conversation about IMAGE: one question per line ("more" asks for details of the description);
    an empty line or end of input stops."""
    from edgelmm.imaging import open_image
    from edgelmm.quality import check_photo

    photo = open_image(image)  # decoded once, for the check and the model
    findings = check_photo(photo)
    model = _open_model(ctx, **runtime)
    conversation = model.chat(photo)
    for finding in findings:
        click.echo(finding.hint)
    if describe:
        _stream(model, conversation.ask(model.describe_prompt, max_tokens=max_tokens, temperature=temperature,
                                        stream=True), len(findings))
    interactive = sys.stdin.isatty()
    if interactive:
        click.echo("Ask about the image. An empty line ends the conversation.", err=True)
    while True:
        if interactive:
            click.echo("> ", nl=False, err=True)
        raw = _stdin().readline()
        if not raw.strip():
            return
        try:
            line = _decoded(raw)
            line = model.describe_more_prompt if line.strip().lower() in MORE else line
            _stream(model, conversation.ask(line, max_tokens=max_tokens, temperature=temperature, stream=True),
                    len(findings))
        except UserError as e:  # a question too long for what is left of the context, or not text: say so, go on
            click.echo(f"error: {e}", err=True)
            click.echo()


@app.command()
@click.option("--model", "-m", "model_path", type=click.Path(), help="Bundle folder [default: $EDGELMM_MODEL, "
              "else the built-in demo model].")
@click.option("--threads", type=Checked(int, options.check_threads),
              help="CPU threads [default: one per physical core].")
@click.option("--show", is_flag=True, help="Print what this machine has stored for the bundle; measure nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
def calibrate(model_path, threads, show, as_json) -> None:
    """Measure how llama.cpp runs a bundle on this machine and how long its first word takes for each
    number of image tokens (for --ttft-budget); remember both."""
    from edgelmm.bundle_format import BundleError, load_manifest
    from edgelmm.runtime.calibration import CalibrationStore, store_key, tuned_settings
    from edgelmm.runtime.latency import LatencyModel, bundle_id, latency_for, latency_key
    from edgelmm.runtime.llama_engine import EngineError, EngineSettings, default_threads
    from edgelmm.runtime.model import default_model, load

    bundle = Path(model_path) if model_path else default_model()
    manifest = load_manifest(bundle)
    threads = threads or default_threads()
    store = CalibrationStore()
    scored = manifest.vision.output.importance is not None
    if show:
        settings = store.get(store_key(manifest.file("lm").sha256, threads))
        latency = store.get(latency_key("llamacpp", bundle_id(manifest), threads))
        try:
            latency = LatencyModel(**latency) if latency else None
        except (TypeError, ValueError):
            latency = None  # stale or damaged: measured again at the next use
    else:
        try:
            _, settings = tuned_settings(manifest.path(bundle, "lm"), manifest.file("lm").sha256,
                                         EngineSettings(n_threads=threads), manifest.vision.output.tokens, force=True)
        except EngineError as e:
            raise BundleError(f"{bundle}: {e}") from None
        latency = latency_for(load(bundle, n_threads=threads), force=True) if scored else None
    if as_json:
        click.echo(json.dumps({"settings": settings, "latency": latency and latency.__dict__}, indent=2))
        return
    click.echo(f"{bundle}: {threads} threads, {manifest.vision.output.tokens} image tokens")
    if settings is None:
        click.echo("  llama.cpp settings: not measured yet")
    else:
        for name, figures in settings["measured"].items():
            shown = figures.get("error") or (f"load {figures['load_s']:.2f} s, prefill {figures['prefill_tok_s']:.1f} "
                                             f"tok/s, decode {figures['decode_tok_s']:.1f} tok/s")
            click.echo(f"  {name:10} {shown}")
        click.echo(f"  chosen: {'repack' if settings['repack'] else 'no_repack'}")
    if not scored:
        click.echo("  time to first token: fixed (the vision graph gives no token scores: all tokens are read)")
    elif latency is None:
        click.echo("  time to first token: not measured yet")
    else:
        click.echo("  image tokens  predicted time to first token")
        n = latency.tokens
        for k in sorted({n, max(1, n // 2), max(1, n // 4), max(1, n // 8), 1}, reverse=True):
            click.echo(f"  {k:>12}  {latency.predict(k):.2f} s")


@app.command()
@click.argument("image", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print each line with its box and score as JSON.")
def read(image: str, as_json: bool) -> None:
    """Read the text in IMAGE, line by line in reading order (offline OCR: the `ocr` extra)."""
    from edgelmm.ocr import read_text

    lines = read_text(image)
    if as_json:
        click.echo(json.dumps({"lines": [line.to_dict() for line in lines]}))
    elif lines:
        click.echo("\n".join(line.text for line in lines))
    else:
        click.echo("No text found.")
