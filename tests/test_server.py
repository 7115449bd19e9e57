"""`edgelmm serve`: the real server in its own process on a free port of 127.0.0.1, with the demo
bundle, talked to by the real `openai` client and by plain HTTP in Ollama's documented format."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PHOTO, OTHER = (EXAMPLES / "es7_000002.png").read_bytes(), (EXAMPLES / "es7_000005.png").read_bytes()
QUESTION = "How many circles are there?"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(*args, env: dict | None = None):
    """A running `edgelmm serve` process; yields (base URL, process)."""
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "edgelmm", "serve", "--port", str(port), "--threads", "1", *args],
                               env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):  # up to 30 s for the model to load
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None:
                raise RuntimeError(f"the server exited: {process.stderr.read()}")
            time.sleep(0.1)
        else:
            raise RuntimeError("the server did not become ready")
        yield url, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture(scope="module")
def running():
    with server("--max-body-mb", "1") as (url, process):
        yield url


def _client(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=30)


def _data_uri(image: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(image).decode()


def _messages(image: bytes, question: str, history=()) -> list:
    first, *rest = [*[m for q, a in history for m in (q, a)], question]
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": _data_uri(image)}},
                                             {"type": "text", "text": first}]}]
    for k, text in enumerate(rest):
        messages.append({"role": "assistant" if k % 2 == 0 else "user", "content": text})
    return messages


@pytest.fixture(scope="module")
def library():
    import edgelmm

    model = edgelmm.load(n_threads=1)
    yield model
    model.close()


def test_plain_and_streamed_answers_equal_the_library_for_the_same_seed(running, library):
    client = _client(running)
    for temperature, seed in ((0.0, 0), (0.9, 7)):
        expected = library.ask(PHOTO, QUESTION, temperature=temperature, seed=seed)
        plain = client.chat.completions.create(model="demo", messages=_messages(PHOTO, QUESTION),
                                               temperature=temperature, seed=seed)
        assert plain.choices[0].message.content == expected and plain.choices[0].finish_reason == "stop"
        assert plain.usage.completion_tokens > 0 and plain.usage.prompt_tokens > 64
        stream = client.chat.completions.create(model="demo", messages=_messages(PHOTO, QUESTION),
                                                temperature=temperature, seed=seed, stream=True,
                                                stream_options={"include_usage": True})
        chunks = list(stream)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
        assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert [m.id for m in client.models.list().data] == ["demo"]


def test_a_follow_up_reuses_the_image_after_other_clients(running, library):
    client = _client(running)
    first = client.chat.completions.create(model="demo", messages=_messages(PHOTO, "Describe the image."))
    client.chat.completions.create(model="demo", messages=_messages(OTHER, "What colour is the star?"))
    answer = first.choices[0].message.content
    follow = client.chat.completions.create(
        model="demo", messages=_messages(PHOTO, "What colour is the star?", [("Describe the image.", answer)]))
    timings = follow.model_extra["edgelmm"]
    assert timings["image_cached"]
    assert timings["reused_tokens"] >= 64 and timings["restored_tokens"] >= 64
    expected = library.ask(PHOTO, "What colour is the star?", history=[("Describe the image.", answer)])
    assert follow.choices[0].message.content == expected
    stats = httpx.get(f"{running}/metrics").json()
    assert stats["image_cache"]["hits"] >= 1 and stats["kv_cache"]["states"] >= 1


def test_bad_requests_get_openai_error_objects(running):
    client = _client(running)
    http = [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}, {"type": "text", "text": "Hi"}]
    cases = [([{"role": "user", "content": http}], "fetches no URLs"),
             ([{"role": "user", "content": "What is this?"}], "one image: the conversation has 0"),
             (_messages(PHOTO, QUESTION)[:1] + [{"role": "user", "content": [
                 {"type": "image_url", "image_url": {"url": _data_uri(OTHER)}}]}], "has 2"),
             ([{"role": "user", "content": [{"type": "audio", "x": 1}]}], "must be a text or image_url part"),
             ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@"}},
                                           {"type": "text", "text": "Hi"}]}], "not valid base64")]
    for messages, message in cases:
        with pytest.raises(openai.BadRequestError, match=message):
            client.chat.completions.create(model="demo", messages=messages)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model="demo", messages=_messages(PHOTO, QUESTION), temperature=5)
    raw = httpx.post(f"{running}/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert raw.status_code == 400 and raw.json()["error"]["type"] == "invalid_request_error"
    big = httpx.post(f"{running}/v1/chat/completions", content=b"x" * (2 << 20))
    assert big.status_code == 413 and "over" in big.json()["error"]["message"]


def test_an_api_key_is_checked_when_configured():
    with server(env={"EDGELMM_API_KEY": "sesame"}) as (url, process):
        with pytest.raises(openai.AuthenticationError):
            _client(url, "wrong").chat.completions.create(model="demo", messages=_messages(PHOTO, QUESTION))
        answer = _client(url, "sesame").chat.completions.create(model="demo", messages=_messages(PHOTO, QUESTION))
        assert answer.choices[0].message.content
        assert httpx.get(f"{url}/health").status_code == 200  # health needs no key
        assert "sesame" not in " ".join(process.args)


def test_requests_beyond_the_queue_get_429_with_retry_after():
    with server("--max-queue", "0") as (url, _):
        barrier, results = threading.Barrier(8), []

        def ask() -> None:
            barrier.wait()
            response = httpx.post(f"{url}/v1/chat/completions", timeout=30,
                                  json={"model": "demo", "messages": _messages(PHOTO, "Describe the image.")})
            results.append((response.status_code, response.headers.get("retry-after"), response.json()))
        threads = [threading.Thread(target=ask) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = sorted(code for code, _, _ in results)
        assert set(codes) == {200, 429} and codes.count(200) >= 1
        for code, retry_after, body in results:
            if code == 429:
                assert int(retry_after) >= 1 and body["error"]["type"] == "rate_limit_error"


def test_a_client_leaving_mid_stream_frees_the_model(running):
    with httpx.stream("POST", f"{running}/v1/chat/completions", timeout=30,
                      json={"model": "demo", "stream": True, "temperature": 2.0, "seed": 3, "max_tokens": 400,
                            "messages": _messages(PHOTO, "Describe the image.")}) as response:
        assert response.status_code == 200
        next(response.iter_lines())  # the first event, then the client goes
    for _ in range(100):
        if httpx.get(f"{running}/metrics").json()["pending"] == 0:
            break
        time.sleep(0.05)
    assert httpx.get(f"{running}/metrics").json()["pending"] == 0
    answer = _client(running).chat.completions.create(model="demo", messages=_messages(PHOTO, QUESTION))
    assert answer.choices[0].message.content


def test_ollama_chat_generate_and_tags(running, library):
    expected = library.ask(PHOTO, QUESTION)
    image = base64.b64encode(PHOTO).decode()
    chat = {"model": "demo", "messages": [{"role": "user", "content": QUESTION, "images": [image]}]}
    with httpx.stream("POST", f"{running}/api/chat", json=chat, timeout=30) as response:  # streams by default
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert "".join(x["message"]["content"] for x in lines) == expected
    assert lines[-1]["done"] and lines[-1]["eval_count"] > 0 and not any(x["done"] for x in lines[:-1])
    generate = httpx.post(f"{running}/api/generate", timeout=30,
                          json={"model": "demo", "prompt": QUESTION, "images": [image], "stream": False,
                                "options": {"temperature": 0, "num_predict": 64}}).json()
    assert generate["response"] == expected and generate["done"] and generate["done_reason"] == "stop"
    tags = httpx.get(f"{running}/api/tags").json()["models"]
    assert tags[0]["name"] == "demo:latest" and tags[0]["details"]["quantization_level"] == "q4_k_m"
    bad = httpx.post(f"{running}/api/generate", json={"model": "demo", "prompt": QUESTION, "images": ["@@"]})
    assert bad.status_code == 400 and "base64" in bad.json()["error"]


def test_sigterm_finishes_the_answer_in_flight_and_exits_cleanly():
    with server() as (url, process):
        answer = httpx.post(f"{url}/api/generate", timeout=30, json={
            "model": "demo", "prompt": QUESTION, "images": [base64.b64encode(PHOTO).decode()], "stream": False})
        assert answer.status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        log = process.stderr.read()
    assert "POST /api/generate 200" in log and QUESTION not in log and "Traceback" not in log


def test_a_taken_port_is_one_clear_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        run = subprocess.run([sys.executable, "-m", "edgelmm", "serve", "--port", str(taken.getsockname()[1])],
                             capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and run.stderr.strip().startswith("edgelmm: error: cannot listen on 127.0.0.1:")


# ---- the service without HTTP: queue, shutdown, clients that leave while waiting ---------------------

def test_waiting_requests_get_503_on_shutdown_and_leavers_are_skipped():
    import asyncio

    from edgelmm.server.service import Busy, Job, Service, Unavailable

    service = Service(None, max_queue=1, n_threads=1)
    service.load()
    release = threading.Event()
    service._executor.submit(release.wait)  # the worker is busy, as with a long answer in flight

    async def scenario():
        left = service.answer(Job(image=PHOTO, question=QUESTION))
        waiting = service.answer(Job(image=PHOTO, question=QUESTION))
        first = asyncio.ensure_future(left.__anext__())
        second = asyncio.ensure_future(waiting.__anext__())
        await asyncio.sleep(0.1)  # both admitted and queued behind the busy worker
        with pytest.raises(Busy) as busy:
            await service.answer(Job(image=PHOTO, question=QUESTION)).__anext__()
        assert busy.value.retry_after >= 1
        first.cancel()  # this client leaves while waiting
        await asyncio.gather(first, return_exceptions=True)
        await left.aclose()
        service.shutdown()
        release.set()
        with pytest.raises(Unavailable, match="shutting down"):
            await second
        with pytest.raises(Unavailable):
            await service.answer(Job(image=PHOTO, question=QUESTION)).__anext__()

    asyncio.run(scenario())
    service.close()
    assert service.stats()["cancelled"] == 1 and service.stats()["refused_busy"] == 1


def test_photo_findings_and_the_description_prompt_through_the_api(running, library):
    from PIL import Image, ImageFilter
    import io

    blurred = io.BytesIO()
    Image.open(EXAMPLES / "es7_000002.png").resize((448, 448)).filter(ImageFilter.GaussianBlur(4)).save(blurred, "PNG")
    answer = _client(running).chat.completions.create(model="demo", messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": _data_uri(blurred.getvalue())}}]}])  # no question
    findings = answer.model_extra["edgelmm"]["photo"]
    assert [f["name"] for f in findings] == ["blurred"] and findings[0]["hint"].startswith("The photo looks blurred")
    assert answer.choices[0].message.content == library.ask(blurred.getvalue())
    extra = answer.model_extra["edgelmm"]
    assert 0 < extra["confidence"] <= 0.5  # halved: blurred
    assert extra["unsure"] == (extra["confidence"] < library.unsure_below)
