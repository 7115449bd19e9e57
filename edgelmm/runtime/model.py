"""`edgelmm.load()` and what it returns: a model that answers questions about images.

A `Model` drives one backend, which holds one sequence in its KV cache. Every question becomes a list
of keys (token ids, and one key per image-embedding position); what the cache already holds of that
list is kept and only the rest is decoded. `chat(image)` reads the image into the cache at once, so the
first question waits only for its own tokens, and a follow-up question in a `Conversation` likewise:
the image is not encoded again and earlier turns are not read again. A model serving several
conversations in turn (`kv_cache_mb`, a server's) also saves the cache of one before serving another
and brings it back for its follow-up (`runtime.prefix_states`).
"""

from __future__ import annotations

import codecs
import dataclasses
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from edgelmm.errors import UserError
from edgelmm.imaging import preprocess
from edgelmm.options import check_budget, check_generation, check_n_ctx, check_positive, check_stop, check_threads
from edgelmm.runtime.answer import Answer, Timings
from edgelmm.runtime.backends import backend_class
from edgelmm.runtime.confidence import UNSURE_BELOW
from edgelmm.runtime.image_embeddings import ImageEmbeddings
from edgelmm.runtime.latency import tokens_for_budget
from edgelmm.runtime.prefix_states import PrefixStates, common_prefix
from edgelmm.runtime.stop_strings import StopStrings
from edgelmm.runtime.token_reduction import check_selection
from edgelmm.chat import IMAGE, USER_OPEN, ChatFormat, UserText

MODEL_ENV = "EDGELMM_MODEL"
DESCRIBE = "Describe the image."  # the question when none is given and the bundle names none
DESCRIBE_MORE = "Describe the image in more detail."  # asking for details, where the bundle names nothing
ANSWERED_KEPT = 32  # answered conversations a serving model remembers the keys of


def default_model() -> Path:
    """The bundle `load()` uses without a `model`: $EDGELMM_MODEL, else the demo model in the package."""
    if os.environ.get(MODEL_ENV):
        return Path(os.environ[MODEL_ENV])
    return Path(__file__).resolve().parent.parent / "models" / "demo"


def load(model: str | Path | None = None, *, backend: str = "auto", n_threads: int | None = None,
         n_ctx: int | None = None, image_tokens: int | None = None, merge: int = 0,
         ttft_budget: float | None = None, selection: str = "importance", selection_seed: int = 0,
         kv_cache_mb: float = 0, verbose: bool = False, **options) -> Model:
    """Open a bundle (or, for the torch backend, a checkpoint). None: the bundled demo model.

    `n_threads`: CPU threads (default: one per physical core). `n_ctx`: a fixed context (default: sized
    to what is asked, growing with a conversation). `image_tokens`, `merge`: read only the most
    important image tokens, `merge` of them merged from the rest (default: all; see
    `runtime.token_reduction`); `ttft_budget`: seconds to the first word, for which the most image tokens
    that fit are read (measured once per machine, see `runtime.latency`); each question may say
    otherwise. `selection="random"` keeps random tokens instead of the most important, drawn afresh for
    each image from seeds counted from `selection_seed` (a run repeats): the control that measures what
    the scores carry. `kv_cache_mb`: memory for saved KV caches of earlier prompts (see
    `runtime.prefix_states`; 0: none), for a model that serves several conversations in turn.
    Backend options: `repack` (llamacpp:
    llama.cpp's weight re-layout on or off; default: what measured fastest on this machine, see
    `edgelmm calibrate`); `dtype` (torch: "float32", "bfloat16" or "auto").
    """
    check_threads(n_threads)
    check_n_ctx(n_ctx)
    if ttft_budget is not None:
        check_budget(ttft_budget)  # before the model loads
    started = time.perf_counter()
    path = Path(model) if model is not None else default_model()
    opened = backend_class(backend)(path, n_threads=n_threads, n_ctx=n_ctx, verbose=verbose, **options)
    return Model(opened, path, load_seconds=time.perf_counter() - started, image_tokens=image_tokens, merge=merge,
                 ttft_budget=ttft_budget, selection=selection, selection_seed=selection_seed,
                 kv_cache_bytes=int(check_positive(kv_cache_mb, "kv_cache_mb") * 2**20) if kv_cache_mb else 0)


class ModelLock:
    """One generation at a time per model.

    A call waits for the generation before it. A stream (`ask(..., stream=True)`) holds the model from
    its first chunk until it is read to the end, closed, or garbage-collected, and may be read from any
    thread (as a web server hands a response to another thread). A thread that asks again while a stream
    it is reading is still open gets an error instead of waiting for itself forever.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # not re-entrant, and releasable from any thread
        self._holder: int | None = None  # the thread that took it

    def __enter__(self) -> None:
        if self._holder == threading.get_ident():
            raise UserError("an answer streamed in this thread is still open: read it to the end or close it "
                            "before asking again")
        self._lock.acquire()
        self._holder = threading.get_ident()

    def __exit__(self, *exc) -> None:
        self._holder = None
        self._lock.release()


class Model:
    """A loaded model. `ask`, `answer` and `chat` are safe to call from several threads (see `ModelLock`);
    `timings` are the calling thread's last figures."""

    def __init__(self, backend, path: Path, load_seconds: float = 0.0, image_tokens: int | None = None,
                 merge: int = 0, ttft_budget: float | None = None, selection: str = "importance",
                 selection_seed: int = 0, kv_cache_bytes: int = 0) -> None:
        self.backend = backend
        self.path = path
        self.load_seconds = load_seconds
        self.image_tokens, self.merge, self.ttft_budget = image_tokens, merge, ttft_budget  # every question's
        self.selection = check_selection(selection)
        self._selection_seed = selection_seed  # counts images, for the random control's draws
        self._lock = ModelLock()
        self._cached: list = []  # the keys the backend's cache holds, in order
        self._states = PrefixStates(kv_cache_bytes) if kv_cache_bytes and hasattr(backend, "save_state") else None
        # With saved states, a model serves conversations sent back whole (a server's): it remembers
        # the last answers' texts and the keys they were generated as.
        self._answered: OrderedDict[str, list] | None = OrderedDict() if self._states is not None else None
        self._local = threading.local()  # each thread's last timings

    @property
    def timings(self) -> Timings:
        """Seconds spent on this thread's last answer (or image, before any answer)."""
        return getattr(self._local, "timings", None) or Timings(load=self.load_seconds)

    def _new_timings(self) -> Timings:
        timings = Timings(load=self.load_seconds)
        self._local.timings = timings
        return timings

    # ---- images ----------------------------------------------------------------------------------

    def encode_image(self, image) -> np.ndarray:
        """The image's embeddings (N, D) as the language model receives them."""
        return self._embeddings(image, self._new_timings()).array

    def embeddings(self, image) -> ImageEmbeddings:
        """The image encoded once, to be given to `ask`, `answer` or `chat` as many times as wanted:
        questions about the same `ImageEmbeddings` share its positions in the cache."""
        return self._embeddings(image, self._new_timings())

    def _embeddings(self, image, timings: Timings) -> ImageEmbeddings:
        if isinstance(image, ImageEmbeddings):
            return image
        if isinstance(image, np.ndarray) and image.dtype != np.uint8:  # embeddings from encode_image
            if image.ndim != 2:
                raise UserError(f"image embeddings must be (N, D), got shape {image.shape}")
            return ImageEmbeddings(image)
        started = time.perf_counter()
        with self._lock:  # decoding too: Pillow's limits are process-wide settings
            embeds, importance = self.backend.encode_image(preprocess(image, self.backend.image_spec))
        timings.image_encode = time.perf_counter() - started
        return ImageEmbeddings(embeds, importance)

    # ---- questions -------------------------------------------------------------------------------

    @property
    def describe_prompt(self) -> str:
        """The question asked when none is given: the bundle's (`prompt.describe`), else `DESCRIBE`."""
        manifest = getattr(self.backend, "manifest", None)
        return (manifest.prompt.describe if manifest else None) or DESCRIBE

    def kv_cache_stats(self) -> dict | None:
        """The saved KV caches of earlier prompts (`kv_cache_mb`): how many and their bytes; None when off."""
        states = self._states
        return {"states": len(states), "bytes": states.bytes} if states is not None else None

    @property
    def describe_more_prompt(self) -> str:
        """The follow-up asking for details after a description: the bundle's, else `DESCRIBE_MORE`."""
        manifest = getattr(self.backend, "manifest", None)
        return (manifest.prompt.describe_more if manifest else None) or DESCRIBE_MORE

    @property
    def unsure_below(self) -> float:
        """The confidence below which an answer is said to be unsure: the bundle's calibrated
        `generation.unsure_below`, else `confidence.UNSURE_BELOW`."""
        manifest = getattr(self.backend, "manifest", None)
        calibrated = manifest.generation.unsure_below if manifest else None
        return calibrated if calibrated is not None else UNSURE_BELOW

    def ask(self, image, question: str | None = None, *, max_tokens: int = 256, temperature: float = 0.0,
            stream: bool = False, seed: int = 0, top_p: float = 1.0, stop=(), **reading):
        """The answer to one question about `image` (a path, bytes, PIL image, HxWx3 uint8 array, or
        embeddings from `encode_image` or `embeddings`): a str, or an iterator of text chunks when
        `stream`. `stop` adds strings that end the answer to the model's. `image_tokens`, `merge`,
        `ttft_budget` override the model's (see `load`); `system_prompt` and `history` go to `chat`.
        Without a question, the model describes the image (`describe_prompt`)."""
        return self.chat(image, **reading).ask(question or self.describe_prompt, max_tokens=max_tokens,
                                                temperature=temperature,
                                                stream=stream, seed=seed, top_p=top_p, stop=stop)

    def answer(self, image, question: str | None = None, *, max_tokens: int = 256, temperature: float = 0.0,
               seed: int = 0, top_p: float = 1.0, stop=(), **reading) -> Answer:
        """Like `ask`, returning the `Answer`: the text with this answer's own timings."""
        return self.chat(image, **reading).answer(question or self.describe_prompt, max_tokens=max_tokens,
                                                  temperature=temperature,
                                                  seed=seed, top_p=top_p, stop=stop)

    def chat(self, image, *, image_tokens: int | None = None, merge: int | None = None,
             ttft_budget: float | None = None, system_prompt: str | None = None,
             history: list[tuple[str, str]] = (), prefill: bool = True) -> Conversation:
        """A conversation about one image. The image is encoded here, once, and read into the cache, so
        that a question asked later (while a user speaks it, say) waits only for its own tokens.
        `system_prompt` replaces the model's; `history` holds earlier (question, answer) turns.
        `prefill=False` leaves the cache alone until the first question (a server asking at once)."""
        budget = ttft_budget if ttft_budget is not None else self.ttft_budget
        if budget is not None and image_tokens is None:
            image_tokens = tokens_for_budget(self, budget)  # measured on first use
        timings = self._new_timings()
        keep = image_tokens if image_tokens is not None else self.image_tokens
        embeds = self._embeddings(image, timings).reduced(keep, merge if merge is not None else self.merge,
                                                          self.selection, self._selection_seed)
        self._selection_seed += 1  # a new random draw per image for the random control
        timings.image_tokens = len(embeds.array)
        chat_format = self.backend.chat
        if system_prompt is not None:
            if not isinstance(system_prompt, str):
                raise UserError("the system prompt must be text")
            chat_format = dataclasses.replace(chat_format, system_prompt=system_prompt or None)
        conversation = Conversation(self, embeds, turns=[(_checked(q), a) for q, a in history],
                                    chat_format=chat_format, _image_timings=timings)
        if prefill:
            with self._lock:
                started = time.perf_counter()
                self._prefill(conversation.image_keys(), timings)
                timings.image_prefill = time.perf_counter() - started
        return conversation

    def close(self) -> None:
        with self._lock:
            self.backend.close()

    # ---- decoding (called with the lock held) ----------------------------------------------------

    def _prefill(self, keys: list, timings: Timings) -> None:
        """Make the cache hold exactly `keys`, decoding only what it does not hold yet."""
        backend = self.backend
        backend.reserve(len(keys) + 1)
        if len(keys) >= backend.n_ctx:
            raise UserError(f"the prompt is {len(keys)} tokens; the model's context holds {backend.n_ctx}: "
                            "ask a shorter question or start a new conversation")
        common = common_prefix(self._cached, keys)
        timings.restored_tokens = 0
        if self._states is not None:
            shared, saved_keys, state = self._states.best(keys)
            if common < len(self._cached):  # the cache is about to lose what it holds: keep it for later
                self._states.add(self._cached, backend.save_state())
            if shared > common:  # an earlier prompt shares more with this one: its cache comes back
                backend.load_state(state, len(saved_keys))
                self._cached, common = list(saved_keys), shared
                timings.restored_tokens = shared
        common = min(common, len(keys) - 1, backend.position)  # the last key is decoded again for its logits
        backend.truncate(common)
        self._cached = keys[:common]
        timings.reused_tokens = common
        start = common
        while start < len(keys):  # runs of token ids and runs of image positions
            is_image = isinstance(keys[start], tuple)
            end = start
            while end < len(keys) and isinstance(keys[end], tuple) == is_image:
                end += 1
            run = keys[start:end]
            if is_image:
                image, first = run[0]
                backend.feed_embeddings(image.array[first:first + len(run)])
            else:
                backend.feed_tokens(run)
            self._cached.extend(run)
            start = end

    def _generate(self, max_tokens: int, temperature: float, seed: int,
                  top_p: float = 1.0) -> Iterator[tuple[int, str]]:
        """(token, text) pairs of the answer, until an end token, a stop string or `max_tokens`."""
        backend = self.backend
        # Backends written before top_p existed take two arguments; they are asked for it only when used.
        sample = backend.sampler(temperature, seed, top_p) if top_p < 1 else backend.sampler(temperature, seed)
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        for _ in range(max_tokens):
            token = sample()
            if backend.is_end(token):
                return
            yield token, utf8.decode(backend.token_bytes(token))
            if backend.position >= backend.n_ctx:
                backend.reserve(backend.position + 1)  # a context that can grow doubles here
                if backend.position >= backend.n_ctx:
                    return  # the model's context is full
            backend.feed_tokens([token])
            self._cached.append(token)


@dataclass
class Conversation:
    """Questions and answers about one image, sharing the model's KV cache between turns."""

    model: Model
    image: ImageEmbeddings
    turns: list[tuple[str, str]] = field(default_factory=list)
    chat_format: ChatFormat | None = None  # the model's, unless `Model.chat` was given a system prompt
    _text_keys: tuple[str, list] | None = None  # the last prompt+answer text and its keys as decoded
    _image_timings: Timings | None = None  # the image's figures, until the first answer carries them

    def __post_init__(self) -> None:
        self.chat_format = self.chat_format or self.model.backend.chat

    def ask(self, question: str, *, max_tokens: int = 256, temperature: float = 0.0, stream: bool = False,
            seed: int = 0, top_p: float = 1.0, stop=()):
        """The answer (str), or an iterator of text chunks when `stream`; the turn joins the history.
        `stop` adds strings that end the answer to the model's."""
        check_generation(max_tokens, temperature, seed, top_p, stop)
        chunks = self._answer(_checked(question), max_tokens, temperature, seed, self._timings(), top_p,
                              check_stop(stop))
        return chunks if stream else "".join(chunks).strip()

    def answer(self, question: str, *, max_tokens: int = 256, temperature: float = 0.0, seed: int = 0,
               top_p: float = 1.0, stop=()) -> Answer:
        """Like `ask`, returning the `Answer`: the text with this answer's own timings."""
        check_generation(max_tokens, temperature, seed, top_p, stop)
        timings = self._timings()
        text = "".join(self._answer(_checked(question), max_tokens, temperature, seed, timings, top_p,
                                    check_stop(stop))).strip()
        return Answer(text, timings)

    def _timings(self) -> Timings:
        """The first answer carries the image's encode and prefill; a follow-up's are zero."""
        timings, self._image_timings = self._image_timings or Timings(load=self.model.load_seconds), None
        return timings

    def _answer(self, question: str, max_tokens: int, temperature: float, seed: int,
                timings: Timings, top_p: float = 1.0, stop: list[str] = ()) -> Iterator[str]:
        model = self.model
        with model._lock:
            started = time.perf_counter()
            model._local.timings = timings
            fmt = self.chat_format
            text = fmt.render_marked([*self.turns, (question, None)])
            keys = self._keys(text)
            model._prefill(keys, timings)
            timings.prompt_tokens = len(keys)
            timings.prefill = time.perf_counter() - started
            stops = StopStrings([*fmt.stop, *stop])
            raw, decode_started = [], None
            for k, (token, piece) in enumerate(model._generate(max_tokens, temperature, seed, top_p)):
                if k == 0:
                    decode_started = time.perf_counter()
                    timings.first_token = decode_started - started
                    if hasattr(model.backend, "token_probability"):  # read once, before the token is decoded
                        timings.first_token_probability = model.backend.token_probability(token)
                raw.append(piece)
                released = stops.feed(piece)
                if released:
                    yield released
                if stops.stopped:
                    break
            tail = stops.flush()
            if tail:
                yield tail
            timings.decode_tokens = len(raw)
            timings.decode_seconds = time.perf_counter() - decode_started if decode_started else 0.0
            answer = "".join(raw)
            self.turns.append((question, stops.text))
            # The cache holds the prompt and every generated token, so the next turn continues from here
            # when the template renders this answer as it was generated.
            self._text_keys = (text + USER_OPEN + answer, list(model._cached))
            if model._answered is not None:  # for a later request that sends this conversation back
                model._answered[self._text_keys[0]] = self._text_keys[1]
                while len(model._answered) > ANSWERED_KEPT:
                    model._answered.popitem(last=False)

    def image_keys(self) -> list:
        """The keys of the prompt up to the image's last position: the same whatever the question."""
        pieces = self.chat_format.pieces(self.chat_format.render_marked([("", None)]))
        return self._piece_keys(pieces[:pieces.index(IMAGE) + 1])  # the image precedes the first question

    def _keys(self, text: str) -> list:
        # The longest earlier prompt+answer this text continues: its keys are the tokens as generated
        # (text tokenized afresh may split an answer differently, and would not match the cache).
        earlier = [self._text_keys] if self._text_keys else []
        earlier += list(self.model._answered.items()) if self.model._answered is not None else []
        known = max((e for e in earlier if text.startswith(e[0])), key=lambda e: len(e[0]), default=None)
        if known:
            previous_text, previous_keys = known
            return previous_keys + self._piece_keys(self.chat_format.pieces(text[len(previous_text):]))
        return self._piece_keys(self.chat_format.pieces(text))

    def _piece_keys(self, pieces: list) -> list:
        keys, text = [], []
        for piece in [*pieces, None]:  # None: the end, where the last run of text is tokenized
            if piece is IMAGE or piece is None:
                keys.extend(self._tokens(text))
                text = []
                if piece is IMAGE:
                    keys.extend(self.image.keys())
            else:
                text.append(piece)
        return keys

    def _tokens(self, parts: list[str]) -> list[int]:
        """Token ids of a run of text: the template's with its control tokens, a user's never. Where
        the user's text holds no control token's text, the run is tokenized as one text, exactly as the
        model was trained; otherwise each part on its own."""
        tokenize = self.model.backend.tokenize
        users = [p for p in parts if isinstance(p, UserText)]
        if all(tokenize(u, special=True) == tokenize(u, special=False) for u in users):
            return tokenize("".join(parts), special=True) if parts else []
        return [t for p in parts for t in tokenize(p, special=not isinstance(p, UserText))]


def _checked(question) -> str:
    if not isinstance(question, str) or not question.strip():
        raise UserError("the question is empty")
    try:
        question.encode("utf-8")  # lone surrogates: bytes from argv that were not UTF-8
    except UnicodeEncodeError:
        raise UserError("the question is not valid UTF-8 text") from None
    return question.strip()
