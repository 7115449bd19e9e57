"""Serving several conversations in turn: saved KV caches of earlier prompts come back, and answers
with them are the answers without them; per-request system prompt, history, top_p and stop strings."""

from __future__ import annotations

import pytest

from edgelmm.errors import UserError
from edgelmm.runtime.prefix_states import PrefixStates

IMAGES = ["es7_000002.png", "es7_000005.png"]


@pytest.fixture(scope="module")
def photos():
    from pathlib import Path

    folder = Path(__file__).resolve().parent.parent / "examples"
    return [(folder / name).read_bytes() for name in IMAGES]


def test_a_follow_up_after_another_conversation_gets_its_cache_back(photos):
    import edgelmm

    served = edgelmm.load(n_threads=1, kv_cache_mb=64)
    fresh = edgelmm.load(n_threads=1)
    a, b = served.embeddings(photos[0]), served.embeddings(photos[1])
    first = served.answer(a, "How many circles are there?")
    served.answer(b, "Describe the image.")  # another client, in between
    follow_up = served.answer(a, "What colour is the star?", history=[("How many circles are there?", first.text)])
    n_image = len(a.array)
    assert follow_up.timings.restored_tokens >= n_image and follow_up.timings.reused_tokens >= n_image
    expected = fresh.answer(photos[0], "What colour is the star?",
                            history=[("How many circles are there?", first.text)])
    assert follow_up.text == expected.text and expected.timings.restored_tokens == 0
    served.close()
    fresh.close()


def test_prefix_states_stay_within_their_bytes_and_drop_contained_prefixes():
    states = PrefixStates(max_bytes=100)
    states.add([1, 2], b"x" * 40)
    states.add([1, 2, 3], b"y" * 40)  # holds [1, 2]: the shorter one goes
    assert len(states) == 1 and states.best([1, 2, 9]) == (2, [1, 2, 3], b"y" * 40)
    states.add([5], b"z" * 40)
    states.add([6], b"w" * 40)  # over 100 bytes: the least recently used goes
    assert states.bytes <= 100 and states.best([1, 2, 3])[0] == 0
    states.add([7], b"v" * 101)  # larger than the whole store: not kept
    assert states.best([7])[0] == 0


def test_system_prompt_history_top_p_and_stop_strings(photos):
    import edgelmm

    model = edgelmm.load(n_threads=1)
    plain = model.answer(photos[0], "Describe the image.")
    with_system = model.answer(photos[0], "Describe the image.", system_prompt="Be brief.")
    assert with_system.timings.prompt_tokens > plain.timings.prompt_tokens
    # A nucleus this small keeps only the most likely token: sampling becomes greedy.
    assert model.ask(photos[0], "Describe the image.", temperature=1.0, top_p=1e-6, seed=3) == plain.text
    word = plain.text.split()[1]
    cut = model.ask(photos[0], "Describe the image.", stop=[word])
    assert plain.text.startswith(cut) and word not in cut
    with pytest.raises(UserError, match="top_p"):
        model.ask(photos[0], "Describe the image.", top_p=0)
    with pytest.raises(UserError, match="stop must be"):
        model.ask(photos[0], "Describe the image.", stop=[""])
    model.close()
