"""One model served to many clients, whatever the API they speak (OpenAI's or Ollama's).

Generation runs on one worker thread, one answer at a time; requests wait in a bounded queue and those
beyond it are refused at once (`Busy`, HTTP 429 with a Retry-After). A waiting request whose client
has gone is skipped, and a running one stops at the next token, freeing the model. Images are encoded
once: their embeddings are kept by the hash of the image's bytes (bounded in entries and bytes, least
recently used out), so every question about the same photo shares its positions in the model's KV
cache, and the model keeps saved caches of earlier prompts (`load(kv_cache_mb=...)`): a follow-up
about a photo starts decoding without encoding or prefilling the image again, even after other
clients were served. On shutdown the running answer finishes and waiting requests get `Unavailable`.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator

from edgelmm.errors import UserError
from edgelmm.options import check_budget, check_generation, check_stop
from edgelmm.quality import check_photo
from edgelmm.runtime.confidence import confidence, is_unsure


class Busy(UserError):
    """The queue is full."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the server is busy; retry after {retry_after} s")
        self.retry_after = retry_after


class Unavailable(UserError):
    """The model is still loading, or the server is shutting down."""


@dataclass
class Job:
    """One answer to make: a question about an image, with the conversation before it."""

    image: bytes
    question: str
    history: list[tuple[str, str]] = field(default_factory=list)
    system: str | None = None
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: list[str] = field(default_factory=list)
    image_tokens: int | None = None  # edgelmm's extras: fewer image tokens, or a time budget for them
    ttft_budget: float | None = None

    def check(self) -> Job:
        check_generation(self.max_tokens, self.temperature, self.seed, self.top_p, self.stop)
        self.stop = check_stop(self.stop)
        if self.ttft_budget is not None:
            check_budget(self.ttft_budget)
        if not isinstance(self.question, str):
            raise UserError("the question must be text")
        return self


@dataclass
class Result:
    """What an answer came to, after its text."""

    text: str
    finish_reason: str  # "stop" (an end token or stop string) or "length" (max_tokens)
    prompt_tokens: int
    completion_tokens: int
    timings: dict  # seconds, as `runtime.model.Timings`, plus the server's own


class ImageCache:
    """Image embeddings by the sha256 of the image's bytes (and the image tokens read), least recently
    used out beyond `max_entries` or `max_bytes`."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._items: OrderedDict[tuple, object] = OrderedDict()
        self.bytes = self.hits = self.misses = 0

    def get(self, key: tuple):
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
            self.hits += 1
        else:
            self.misses += 1
        return item

    def put(self, key: tuple, embeddings) -> None:
        size = embeddings.array.nbytes
        if self.max_entries <= 0 or size > self.max_bytes:
            return
        self._items[key] = embeddings
        self.bytes += size
        while len(self._items) > self.max_entries or self.bytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self.bytes -= old.array.nbytes

    def stats(self) -> dict:
        return {"entries": len(self._items), "bytes": self.bytes, "hits": self.hits, "misses": self.misses}


class _Trim:
    """Streams an answer as `str.strip()` would give it whole: leading whitespace dropped, trailing
    whitespace held back until more text follows."""

    def __init__(self) -> None:
        self.started, self.held = False, ""

    def feed(self, chunk: str) -> str:
        if not self.started:
            chunk = chunk.lstrip()
            self.started = bool(chunk)
        text = self.held + chunk
        body = text.rstrip()
        self.held = text[len(body):]
        return body


_END = object()


class Service:
    """The model, its queue and its caches."""

    def __init__(self, bundle: str | Path | None, *, name: str | None = None, max_queue: int = 4,
                 n_threads: int | None = None, image_cache_entries: int = 64, image_cache_mb: float = 256,
                 kv_cache_mb: float = 512) -> None:
        from edgelmm.runtime.model import default_model

        self.bundle = Path(bundle) if bundle else default_model()
        self.name = name or self.bundle.resolve().name
        self.max_queue = max_queue
        self.n_threads, self.kv_cache_mb = n_threads, kv_cache_mb
        self.images = ImageCache(image_cache_entries, int(image_cache_mb * 2**20))
        self._photo: dict[str, list[dict]] = {}  # quality findings by image hash, as many as the cache holds
        self.model = None
        self.load_error: str | None = None
        self.closing = False
        self.created = int(time.time())
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgelmm-generate")
        self._pending = 0  # admitted and not finished: waiting or running
        self._lock = threading.Lock()
        self._seconds_per_job = 1.0  # a running mean, for Retry-After
        self.served = self.refused = self.cancelled = 0

    # ---- life ------------------------------------------------------------------------------------

    def load(self) -> None:
        """Load the model (on the worker thread, where it will run)."""
        import edgelmm

        try:
            self.model = edgelmm.load(self.bundle, n_threads=self.n_threads, kv_cache_mb=self.kv_cache_mb)
        except UserError as e:
            self.load_error = str(e)
            raise

    def start_loading(self):
        return self._executor.submit(self.load)

    @property
    def ready(self) -> bool:
        return self.model is not None and not self.closing

    def shutdown(self) -> None:
        """Stop admitting; the running answer finishes, waiting ones get `Unavailable`."""
        self.closing = True

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        if self.model is not None:
            self.model.close()

    def stats(self) -> dict:
        return {"served": self.served, "refused_busy": self.refused, "cancelled": self.cancelled,
                "pending": self._pending, "image_cache": self.images.stats(),
                "kv_cache": self.model.kv_cache_stats() if self.model is not None else None}

    # ---- answering -------------------------------------------------------------------------------

    async def answer(self, job: Job) -> AsyncIterator:
        """Text chunks of the answer, then its `Result`. Raises `Busy` or `Unavailable` before any."""
        job.check()
        if self.closing:
            raise Unavailable("the server is shutting down")
        if self.model is None:
            raise Unavailable(self.load_error or "the model is still loading")
        with self._lock:
            if self._pending > self.max_queue:  # one running plus max_queue waiting
                self.refused += 1
                raise Busy(max(1, math.ceil(self._seconds_per_job * self._pending)))
            self._pending += 1
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()
        self._executor.submit(self._work, job, loop, queue, cancel, time.perf_counter())
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            cancel.set()  # the client left (or the answer ended): a running generation stops here

    def _work(self, job: Job, loop, queue: asyncio.Queue, cancel: threading.Event, admitted: float) -> None:
        def put(item) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        started = time.perf_counter()
        try:
            if cancel.is_set():  # the client left while waiting
                self.cancelled += 1
            elif self.closing:
                raise Unavailable("the server is shutting down")
            else:
                result = self._generate(job, put, cancel, waited=started - admitted)
                if result is None:  # the client left during the answer
                    self.cancelled += 1
                else:
                    put(result)
                    self.served += 1
        except BaseException as e:  # handed to the request's task, which raises it there
            put(e)
        finally:
            elapsed = time.perf_counter() - started
            with self._lock:
                self._pending -= 1
                self._seconds_per_job = 0.8 * self._seconds_per_job + 0.2 * elapsed
            put(_END)

    def _generate(self, job: Job, put, cancel: threading.Event, waited: float) -> Result | None:
        """The answer to `job`, its chunks handed to `put`; None when `cancel` stopped it."""
        from edgelmm.runtime.latency import tokens_for_budget

        model = self.model
        started = time.perf_counter()
        keep = job.image_tokens
        if keep is None and job.ttft_budget is not None:
            keep = tokens_for_budget(model, job.ttft_budget)
        digest = hashlib.sha256(job.image).hexdigest()
        embeddings = self.images.get((digest, keep))
        cached = embeddings is not None
        if not cached:
            full = self.images.get((digest, None)) if keep is not None else None
            full = full or model.embeddings(job.image)
            # The same object for every question about this photo: its positions in the cache are shared.
            embeddings = full.reduced(keep, 0, model.selection) if keep is not None else full
            self.images.put((digest, None), full)
            self.images.put((digest, keep), embeddings)
        encode = time.perf_counter() - started
        # One prefill for image, history and question: a saved cache comes back at most once.
        conversation = model.chat(embeddings, system_prompt=job.system, history=job.history, prefill=False)
        chunks = conversation.ask(job.question.strip() or model.describe_prompt, max_tokens=job.max_tokens,
                                  temperature=job.temperature, top_p=job.top_p, seed=job.seed, stop=job.stop,
                                  stream=True)
        trim, text = _Trim(), []
        try:
            for chunk in chunks:
                if cancel.is_set():
                    return None
                out = trim.feed(chunk)
                if out:
                    text.append(out)
                    put(out)
        finally:
            chunks.close()  # frees the model at once when the client has gone
        timings = model.timings
        timings.image_encode = encode
        if digest not in self._photo:  # the quality check, once per photo and after the answer: not in its way
            self._photo[digest] = [f.to_dict() for f in check_photo(job.image)]
            while len(self._photo) > self.images.max_entries:
                self._photo.pop(next(iter(self._photo)))
        sure = confidence(timings.first_token_probability, len(self._photo[digest]))
        report = {**timings.to_dict(), "image_cached": cached, "queue_wait": round(waited, 6),
                  "photo": self._photo[digest], "confidence": sure,
                  "unsure": is_unsure(sure, model.unsure_below)}
        del report["load"]
        return Result(text="".join(text), finish_reason="length" if timings.decode_tokens >= job.max_tokens else "stop",
                      prompt_tokens=timings.prompt_tokens, completion_tokens=timings.decode_tokens, timings=report)
