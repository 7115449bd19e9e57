"""Backends are discovered, not listed: this package's modules, and third-party ones through the
`edgelmm.backends` entry point; both built-in backends offer the `Backend` interface."""

import textwrap

import numpy as np
import pytest
from PIL import Image

from edgelmm.errors import UnknownNameError
from edgelmm.runtime.backends import backend_class, backend_names
from edgelmm.runtime.backends.base import Backend

# A backend in one file: it "sees" an image's strongest channel and answers with that colour's name.
TOY = '''
    import numpy as np

    from edgelmm.imaging import ImageSpec
    from edgelmm.chat import ChatFormat

    END = 256


    class ToyBackend:
        name = "toy"

        def __init__(self, path, *, n_threads=None, n_ctx=None, verbose=False):
            self.chat = ChatFormat(template="{% for m in messages %}{{ m['content'] }}\\n{% endfor %}",
                                   image_placeholder="<image>")
            self.image_spec = ImageSpec(size=8, resize="squash", mean=(0, 0, 0), std=(1, 1, 1))
            self.size_on_disk, self.n_ctx, self.position, self._seen = 0, n_ctx or 512, 0, None

        def encode_image(self, pixel_values):
            return pixel_values.reshape(3, -1).mean(axis=1)[None], None  # (1, 3): the mean colour

        def tokenize(self, text, special=True):  # bytes: no control tokens to parse
            return list(text.encode("utf-8"))

        def truncate(self, n):
            self.position = min(self.position, n)

        def reserve(self, n_positions):
            pass

        def feed_tokens(self, ids):
            self.position += len(ids)

        def feed_embeddings(self, embeds):
            self._seen, self.position = embeds[0], self.position + len(embeds)

        def sampler(self, temperature, seed):
            word = iter([*("red", "green", "blue")[int(np.argmax(self._seen))].encode(), END])
            return lambda: next(word)

        def is_end(self, token):
            return token == END

        def token_bytes(self, token):
            return bytes([token])

        def info(self):
            return {"backend": self.name}

        def close(self):
            pass
'''


@pytest.fixture
def toy_installed(tmp_path, monkeypatch):
    """The toy backend as an installed package would offer it: a module and a dist-info entry point."""
    (tmp_path / "toy_backend.py").write_text(textwrap.dedent(TOY))
    dist = tmp_path / "edgelmm_toy-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: edgelmm-toy\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[edgelmm.backends]\ntoy = toy_backend:ToyBackend\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_builtin_backends_are_found_without_a_list():
    assert backend_names()[:2] == ["llamacpp", "torch"]
    assert backend_class("auto") is backend_class("llamacpp")
    assert backend_class("torch").name == "torch"
    with pytest.raises(UnknownNameError, match="unknown backend 'nope'; valid: auto, llamacpp, torch"):
        backend_class("nope")


def test_a_third_party_backend_in_one_file_answers_through_the_cli(toy_installed, capsys, monkeypatch):
    from test_runtime import run_cli

    assert "toy" in backend_names()
    image = toy_installed / "green.png"
    Image.new("RGB", (20, 10), (10, 200, 30)).save(image)
    code, out, err = run_cli(capsys, monkeypatch, "ask", image, "What colour is it?", "--backend", "toy",
                             "-m", toy_installed)
    # A plain green picture is flagged for low contrast, in a sentence before the answer.
    assert code == 0 and out.strip().splitlines()[-1] == "green", err
    model = __import__("edgelmm").load(toy_installed, backend="toy")
    assert isinstance(model.backend, Backend)
    assert model.ask(np.full((4, 4, 3), (250, 0, 0), dtype=np.uint8), "And this one?") == "red"


def test_the_builtin_backends_offer_the_interface(checkpoint, tmp_path):
    import edgelmm
    from edgelmm.export.bundle import export_bundle

    bundle = export_bundle(checkpoint, tmp_path / "b", quant="f32")
    for name in ("llamacpp", "torch"):
        model = edgelmm.load(bundle, backend=name, n_threads=1)
        assert isinstance(model.backend, Backend) and model.backend.info()["backend"] == name
        model.close()
