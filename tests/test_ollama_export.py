"""`edgelmm export --ollama`: the Modelfile names the bundle's GGUF files, and its TEMPLATE, rendered
by Go's own text/template as Ollama renders it, gives the prompts edgelmm's chat template gives."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from edgelmm.chat import ChatFormat
from edgelmm.chat_templates import TEMPLATES
from edgelmm.errors import ConfigError
from edgelmm.export.ollama import go_template
from edgelmm.tokenizer import CHAT_TEMPLATE
from test_runtime import run_cli

GO_RENDERER = Path(__file__).parent / "data" / "render_go_template.go"
CONVERSATIONS = [
    [{"role": "user", "content": "<image>\nWhat is in front of me?"}],
    [{"role": "system", "content": "Answer in one sentence."},
     {"role": "user", "content": "<image>\nIs the \"door\" open?"},
     {"role": "assistant", "content": "Yes, it is open.\n"},
     {"role": "user", "content": "Read the sign: {{ .Content }} «Ausgang» \\n <|end|>"}],
    [{"role": "user", "content": "<image>\nHow many steps?"}, {"role": "assistant", "content": "Three."},
     {"role": "user", "content": "Which way is the exit?"}],
]
FORMATS = {"edgelmm": ChatFormat(template=CHAT_TEMPLATE, bos="<s>", eos="<|end|>"),
           **{name: ChatFormat(template=t.template, bos="<s>", eos="</s>") for name, t in TEMPLATES.items()}}


@pytest.fixture(scope="module")
def go_renderer(tmp_path_factory):
    """The Go renderer, built once (Debian's golang-go: .ci/run installs it)."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("Go is not installed (apt-get install golang-go)")
    folder = tmp_path_factory.mktemp("go")
    env = {**os.environ, "GOCACHE": str(folder / "cache"), "GOPATH": str(folder / "path"), "GOFLAGS": "-mod=mod",
           "GOTOOLCHAIN": "local", "GOPROXY": "off"}
    subprocess.run([go, "build", "-o", str(folder / "render"), str(GO_RENDERER)], check=True, env=env,
                   cwd=folder, capture_output=True, timeout=300)

    def render(template: str, conversations: list) -> list[str]:
        run = subprocess.run([str(folder / "render")], input=json.dumps({"template": template,
                                                                          "conversations": conversations}),
                             capture_output=True, text=True, check=True, timeout=60)
        return json.loads(run.stdout)
    return render


@pytest.mark.parametrize("name", list(FORMATS))
def test_go_renders_the_template_as_edgelmm_does(go_renderer, name):
    chat = FORMATS[name].checked()
    ours = [chat.render(messages, add_generation_prompt=True) for messages in CONVERSATIONS]
    assert go_renderer(go_template(chat), CONVERSATIONS) == ours
    # The runtime's own prompt for a question about an image is one of them.
    assert ours[0] == chat.render_text([("What is in front of me?", None)])


def test_templates_that_word_turns_by_position_are_refused():
    llama2 = ("{% for m in messages %}{% if m['role'] == 'system' %}{% set sys = m['content'] %}"
              "{% elif m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}"
              "{% else %}{{ ' ' + m['content'] + ' </s>' }}{% endif %}{% endfor %}")
    numbered = ("{% for m in messages %}{{ loop.index|string + '. ' + m['role'] + ': ' + m['content'] + '\n' }}"
                "{% endfor %}{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}")
    for template in (llama2, numbered):
        with pytest.raises(ConfigError, match="Ollama TEMPLATE"):
            go_template(ChatFormat(template=template))


def test_cli_export_ollama_writes_a_modelfile_beside_the_gguf_files(checkpoint, tmp_path, capsys, monkeypatch,
                                                                     go_renderer):
    from edgelmm.bundle_format import load_manifest

    out = tmp_path / "b"
    code, _, err = run_cli(capsys, monkeypatch, "export", checkpoint, "--out", out, "--quant", "f32", "--ollama")
    assert code == 0, err
    manifest = load_manifest(out)
    assert manifest.files["modelfile"].path == "Modelfile" and manifest.files["mmproj"].path == "mmproj-f16.gguf"
    lines = (out / "Modelfile").read_text().splitlines()
    assert [x for x in lines if x.startswith("FROM ")] == ["FROM ./lm-f32.gguf", "FROM ./mmproj-f16.gguf"]
    stops = [x.removeprefix("PARAMETER stop ") for x in lines if x.startswith("PARAMETER stop ")]
    assert stops == [json.dumps(s) for s in manifest.prompt.stop]
    assert "PARAMETER temperature 0" in lines and f"PARAMETER num_predict {manifest.generation.max_tokens}" in lines
    template = next(x for x in lines if x.startswith("TEMPLATE"))
    assert template.startswith('TEMPLATE """') and template.endswith('"""') and template.count('"""') == 2
    chat = ChatFormat.from_manifest(manifest.prompt)
    assert go_renderer(template[len('TEMPLATE """'):-3], CONVERSATIONS[:1]) == [
        chat.render_text([("What is in front of me?", None)])]
    assert run_cli(capsys, monkeypatch, "verify", out)[0] == 0
