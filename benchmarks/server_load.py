"""`edgelmm serve` under load: concurrent clients, errors, latency, memory, and what a follow-up costs.

    python benchmarks/server_load.py [--bundle BUNDLE] [--clients 8] [--requests 100] [--max-queue 4]

Starts the server on a free port of 127.0.0.1 (the demo bundle by default) and runs --clients threads,
each sending --requests requests over the OpenAI API: every other request streamed, about one in three
a follow-up question about the photo of that client's previous request (so other clients are served in
between), the others a first question about a photo the server has not seen (an example from
examples/ with one pixel made unique: it is encoded and read cold). A warm-up of the same mix first
fills the server's bounded caches (--kv-cache-mb 32 here), so that RSS is read once they are full.
A 429 is retried after its Retry-After, as a client should; a request is lost if it never succeeds.
Measured: errors, 429s and retries; client latency and time to the first content chunk (p50, p95);
the server's own time to first token of first turns and of follow-ups (the `edgelmm` timings of each
response) and their ratio, and the same at the client for streamed turns (where waiting in the queue
dominates); then, with the load over, one client alone times a first question, another client's
question and a follow-up at the client; the server's RSS after a warm-up and at the end.

Results: benchmarks/results/server_load.{json,md,png} (--results names other files).
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_scale import cpu_description  # noqa: E402

QUESTIONS = ["Describe the image.", "How many circles are there?", "What colour is the star?",
             "Is there a triangle?", "Which shape is the largest?"]
FOLLOW_UPS = ["What colour is it?", "Where is it?", "How many shapes are there in all?"]
KV_CACHE_MB = 32


def unique_photo(image: bytes, client: int, i: int) -> bytes:
    """`image` with its first pixel set from (client, i): bytes the server has not seen."""
    import io

    from PIL import Image

    img = Image.open(io.BytesIO(image)).convert("RGB")
    img.putpixel((0, 0), (client % 256, i % 256, (i // 256) % 256))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def start_server(bundle: str | None, max_queue: int) -> tuple[subprocess.Popen, str]:
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "edgelmm", "serve", "--port", str(port), "--max-queue", str(max_queue),
           "--kv-cache-mb", str(KV_CACHE_MB)]
    process = subprocess.Popen(cmd + (["-m", bundle] if bundle else []), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the server did not start")


def rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def messages(image: bytes, question: str, history: list[tuple[str, str]]) -> list:
    turns = [*[t for q, a in history for t in (q, a)], question]
    out = [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(image).decode()}},
        {"type": "text", "text": turns[0]}]}]
    out += [{"role": "assistant" if k % 2 == 0 else "user", "content": t} for k, t in enumerate(turns[1:])]
    return out


def one_request(client, url: str, body: dict) -> dict:
    """Send until answered (429: wait Retry-After and send again). Client-side seconds and the answer."""
    retries = 0
    while True:
        started = time.perf_counter()
        first_chunk = None
        if body.get("stream"):
            with client.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as response:
                if response.status_code == 200:
                    text, timings = [], None
                    for line in response.iter_lines():
                        if not line.startswith("data: ") or line == "data: [DONE]":
                            continue
                        chunk = json.loads(line[6:])
                        delta = chunk["choices"][0]["delta"].get("content") if chunk["choices"] else None
                        if delta:
                            first_chunk = first_chunk or time.perf_counter() - started
                            text.append(delta)
                        timings = chunk.get("edgelmm") or timings
                    answer = "".join(text)
                else:
                    response.read()
        else:
            response = client.post(f"{url}/v1/chat/completions", json=body, timeout=120)
            if response.status_code == 200:
                data = response.json()
                answer, timings = data["choices"][0]["message"]["content"], data["edgelmm"]
        elapsed = time.perf_counter() - started
        if response.status_code == 429:
            retries += 1
            time.sleep(float(response.headers.get("retry-after", "1")))
            continue
        if response.status_code != 200:
            return {"status": response.status_code, "retries": retries, "latency": elapsed}
        return {"status": 200, "retries": retries, "latency": elapsed, "client_ttft": first_chunk or elapsed,
                "answer": answer, "server_ttft": timings["time_to_first_token"],
                "image_cached": timings["image_cached"], "restored_tokens": timings["restored_tokens"]}


def client_run(k: int, url: str, n: int, images: list[bytes], rows: list, lock: threading.Lock) -> None:
    import httpx

    rng = random.Random(k)
    previous = None  # (image, history) of this client's last conversation
    with httpx.Client() as client:
        for i in range(n):
            follow = previous is not None and rng.random() < 1 / 3
            if follow:
                image, history = previous
                question = rng.choice(FOLLOW_UPS)
            else:
                image, history, question = unique_photo(rng.choice(images), k, i), [], rng.choice(QUESTIONS)
            body = {"model": "edgelmm", "messages": messages(image, question, history), "stream": i % 2 == 1,
                    "max_tokens": 48}
            try:
                row = one_request(client, url, body)
            except Exception as e:  # a transport failure is an error the report counts
                row = {"status": f"{type(e).__name__}", "retries": 0}
            row.update(client=k, turn="follow-up" if follow else "first", streamed=body["stream"])
            with lock:
                rows.append(row)
            if row["status"] == 200:
                previous = (image, [*history, (question, row["answer"])])


def follow_up_probe(url: str, images: list[bytes], rounds: int = 5) -> dict:
    """The follow-up's gain seen by one client with no queue: a first question about a new photo, a
    question from another client about another photo, then the follow-up; streamed, timed to the first
    chunk at the client (and in the server), medians over `rounds`."""
    import httpx

    first, follow, first_server, follow_server = [], [], [], []
    with httpx.Client() as client:
        for r in range(rounds):
            photo = unique_photo(images[r % len(images)], 200, r)
            body = {"model": "edgelmm", "stream": True, "max_tokens": 48}
            a = one_request(client, url, {**body, "messages": messages(photo, QUESTIONS[0], [])})
            one_request(client, url, {**body, "messages": messages(unique_photo(images[0], 201, r), QUESTIONS[1], [])})
            b = one_request(client, url, {**body, "messages": messages(photo, FOLLOW_UPS[0],
                                                                         [(QUESTIONS[0], a["answer"])])})
            first.append(a["client_ttft"]), follow.append(b["client_ttft"])
            first_server.append(a["server_ttft"]), follow_server.append(b["server_ttft"])
    med = statistics.median
    return {"rounds": rounds, "client_ttft_first": med(first), "client_ttft_follow_up": med(follow),
            "client_ratio": med(follow) / med(first), "server_ttft_first": med(first_server),
            "server_ttft_follow_up": med(follow_server), "server_ratio": med(follow_server) / med(first_server)}


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else float("nan")


def summarize(rows: list[dict]) -> dict:
    ok = [r for r in rows if r["status"] == 200]

    def stats(selected, key):
        values = [r[key] for r in selected]
        return {"p50": percentile(values, 0.5), "p95": percentile(values, 0.95), "n": len(values)}

    first = [r for r in ok if r["turn"] == "first"]
    follow = [r for r in ok if r["turn"] == "follow-up"]
    server_first, server_follow = stats(first, "server_ttft"), stats(follow, "server_ttft")
    client_first = stats([r for r in first if r["streamed"]], "client_ttft")
    client_follow = stats([r for r in follow if r["streamed"]], "client_ttft")
    return {
        "requests": len(rows), "answered": len(ok), "errors": len(rows) - len(ok),
        "retries_after_429": sum(r["retries"] for r in rows),
        "latency": stats(ok, "latency"), "client_ttft_streamed": stats([r for r in ok if r["streamed"]], "client_ttft"),
        "server_ttft_first_turn": server_first, "server_ttft_follow_up": server_follow,
        "follow_up_ratio_server": server_follow["p50"] / server_first["p50"],
        "client_ttft_first_turn_streamed": client_first, "client_ttft_follow_up_streamed": client_follow,
        "follow_up_ratio_client": client_follow["p50"] / client_first["p50"],
        "follow_ups_with_image_cached": sum(r["image_cached"] for r in follow) / max(1, len(follow)),
        "follow_ups_with_restored_cache": sum(r["restored_tokens"] > 0 for r in follow) / max(1, len(follow)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--max-queue", type=int, default=4)
    parser.add_argument("--results", default="server_load", help="file name stem under benchmarks/results/")
    args = parser.parse_args()

    images = [p.read_bytes() for p in sorted((ROOT / "examples").glob("*.png"))]
    process, url = start_server(args.bundle, args.max_queue)
    try:
        rows: list[dict] = []
        lock = threading.Lock()
        warm = [threading.Thread(target=client_run, args=(100 + k, url, args.requests, images, [], lock))
                for k in range(args.clients)]
        for t in warm:  # the same load once: the bounded caches fill before RSS is read
            t.start()
        for t in warm:
            t.join()
        rss_start = rss_mb(process.pid)
        started = time.perf_counter()
        threads = [threading.Thread(target=client_run, args=(k, url, args.requests, images, rows, lock))
                   for k in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - started
        rss_end = rss_mb(process.pid)
        probe = follow_up_probe(url, images)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    cpu = cpu_description()
    report = {"machine": f"{cpu['cpu']}, {cpu['cpu_count']} cores, {' '.join(cpu['flags'])}",
              "platform": platform.platform(), "created": datetime.datetime.now().isoformat(timespec="seconds"),
              "bundle": args.bundle or "demo (built in)", "clients": args.clients,
              "requests_per_client": args.requests, "max_queue": args.max_queue, "wall_seconds": wall,
              "rss_mb_start": rss_start, "rss_mb_end": rss_end, "rss_drift": rss_end / rss_start - 1,
              **summarize(rows), "probe": probe, "server_exit_code": process.returncode}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.results}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"{args.results}.md").write_text(markdown(report))
    chart(rows, report, RESULTS / f"{args.results}.png")
    print(markdown(report))


def _ms(stats: dict) -> str:
    return f"{stats['p50'] * 1000:.1f} / {stats['p95'] * 1000:.1f}"


def markdown(r: dict) -> str:
    return "\n".join([
        f"# edgelmm serve under load: {r['clients']} clients x {r['requests_per_client']} requests",
        "", f"Machine: {r['machine']}. Bundle: {r['bundle']}; --max-queue {r['max_queue']}; "
        f"{r['wall_seconds']:.1f} s in all.", "",
        "| measure | value |", "|---|---|",
        f"| requests answered | {r['answered']} of {r['requests']} |",
        f"| errors (lost requests) | {r['errors']} |",
        f"| 429s retried after Retry-After | {r['retries_after_429']} |",
        f"| latency p50 / p95 (ms, client) | {_ms(r['latency'])} |",
        f"| time to first chunk, streamed, p50 / p95 (ms, client) | {_ms(r['client_ttft_streamed'])} |",
        f"| time to first token, first turns, p50 / p95 (ms, server) | {_ms(r['server_ttft_first_turn'])} |",
        f"| time to first token, follow-ups, p50 / p95 (ms, server) | {_ms(r['server_ttft_follow_up'])} |",
        f"| follow-up / first turn, p50 (server) | {r['follow_up_ratio_server']:.3f} |",
        f"| follow-up / first turn, p50 (client, streamed) | {r['follow_up_ratio_client']:.3f} |",
        f"| follow-ups with the image cached / its KV cache restored | {r['follow_ups_with_image_cached']:.0%} / "
        f"{r['follow_ups_with_restored_cache']:.0%} |",
        f"| one client alone, streamed (5 rounds): first question about a new photo -> follow-up after another "
        f"client's question, time to first chunk at the client (ms) | {r['probe']['client_ttft_first'] * 1000:.1f} -> "
        f"{r['probe']['client_ttft_follow_up'] * 1000:.1f} ({r['probe']['client_ratio']:.3f}x; in the server "
        f"{r['probe']['server_ratio']:.3f}x) |",
        f"| server RSS after warm-up -> at the end (MB) | {r['rss_mb_start']:.1f} -> {r['rss_mb_end']:.1f} "
        f"({r['rss_drift']:+.1%}) |",
        f"| server exit code after SIGTERM | {r['server_exit_code']} |", ""])


def chart(rows: list[dict], report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == 200]
    groups = {"first turn": [r["server_ttft"] * 1000 for r in ok if r["turn"] == "first"],
              "follow-up": [r["server_ttft"] * 1000 for r in ok if r["turn"] == "follow-up"]}
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.boxplot(list(groups.values()), orientation="horizontal", showfliers=False, tick_labels=list(groups))
    ax.set_xlabel("time to first token in the server (ms)")
    ax.set_title(f"{report['clients']} clients x {report['requests_per_client']} requests: follow-up/first = "
                 f"{report['follow_up_ratio_server']:.2f} ({report['machine'].split(',')[0]})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
