"""How faithfully `edgelmm import gguf` brings back a trained model, and what llama.cpp's CLS layout costs.

    python benchmarks/import_parity.py --checkpoint CKPT --data eval.json [--limit 500] [--threads 2]

The checkpoint is exported with its mmproj (LM q4_k_m, vision fp32), the GGUF pair is imported back,
and on held-out questions the script measures:
- graph parity: cosine between the imported vision graph's embeddings and the original's, on the same
  pixels (the mmproj holds float16 matrices: the only difference);
- the CLS layout: cosine between llama.cpp's own embeddings of the mmproj (libmtmd, its own decoding and
  preprocessing; CLS appended after the patches, llama.cpp #25814) and the imported graph's on the
  same letterboxed pixels, so that only the layout differs;
- answers: exact match of the original bundle and the imported one (edgelmm's runtime) and of
  llama.cpp's own multimodal path on the same two GGUF files (libmtmd, greedy, the bundle's template).

Results: benchmarks/results/import_parity.{json,md,png}.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_scale import LlamaCpp, cpu_description, eval_text  # noqa: E402

MAX_ANSWER_TOKENS = 16


def _cosine(a, b) -> float:
    return float(a.ravel() @ b.ravel() / np.linalg.norm(a) / np.linalg.norm(b))


def _graph(bundle: Path):
    import onnxruntime as ort

    from edgelmm.bundle_format import load_manifest
    from edgelmm.imaging import ImageSpec

    spec = ImageSpec.from_dict(load_manifest(bundle).vision.input.__dict__)
    session = ort.InferenceSession(str(bundle / "vision.onnx"), providers=["CPUExecutionProvider"])
    return spec, lambda pixels: session.run(None, {"pixel_values": pixels[None]})[0][0]


def embedding_parity(original: Path, imported: Path, images: list[Path], threads: int) -> dict:
    import llama_cpp

    from edgelmm.bundle_format import load_manifest
    from edgelmm.imaging import open_image, preprocess
    from edgelmm.runtime.mtmd import MtmdVision

    spec, ours = _graph(original)
    letterbox, theirs = _graph(imported)
    manifest = load_manifest(imported)
    llm = llama_cpp.Llama(str(manifest.path(imported, "lm")), n_ctx=64, n_threads=threads, verbose=False)
    mtmd = MtmdVision(manifest.path(imported, "mmproj"), llm.model, n_threads=threads)
    graph, layout = [], []
    for path in images:
        rgb = np.asarray(open_image(path))
        graph.append(_cosine(ours(preprocess(rgb, spec)), theirs(preprocess(rgb, spec))))
        imported_embeds = theirs(preprocess(rgb, letterbox))
        layout.append(_cosine(mtmd.encode(rgb, imported_embeds.shape[1]), imported_embeds))
    mtmd.close()
    llm.close()
    summary = lambda xs: {"min": float(np.min(xs)), "median": float(np.median(xs)), "n": len(xs)}  # noqa: E731
    return {"graph": summary(graph), "llama_cpp_layout": summary(layout)}


def mtmd_answerer(bundle: Path, threads: int):
    """Answers from llama.cpp's own multimodal path (libmtmd) on the bundle's GGUF pair."""
    from llama_cpp import mtmd_cpp as mt

    from edgelmm.bundle_format import load_manifest
    from edgelmm.chat import ChatFormat

    manifest = load_manifest(bundle)
    # Weight re-layout off: on AMX hosts llama.cpp's re-layout of quantized weights crashes (edgelmm's
    # calibration turns it off there too); answers do not depend on it.
    llm = LlamaCpp(manifest.path(bundle, "lm"), threads, 1024, 512, repack=False)
    params = mt.mtmd_context_params_default()
    params.use_gpu, params.n_threads, params.print_timings = False, threads, False
    ctx = mt.mtmd_init_from_file(str(manifest.path(bundle, "mmproj")).encode(), llm.model, params)
    chat = ChatFormat.from_manifest(manifest.prompt)
    marker = mt.mtmd_default_marker().decode()
    ll = llm.ll
    vocab = ll.llama_model_get_vocab(llm.model)

    def answer(question: str, image: Path) -> str:
        llm.clear()
        text = chat.render_text([(question, None)]).replace(chat.image_placeholder, marker).encode()
        bitmap = mt.mtmd_helper_bitmap_init_from_file(ctx, str(image).encode(), False)
        chunks = mt.mtmd_input_chunks_init()
        inp = mt.mtmd_input_text(text=text, text_len=len(text), add_special=False, parse_special=True)
        try:
            if mt.mtmd_tokenize(ctx, chunks, ctypes.byref(inp), (mt.mtmd_bitmap_p_ctypes * 1)(bitmap), 1) != 0:
                raise RuntimeError("mtmd_tokenize failed")
            n_past = ctypes.c_int32(0)
            n = mt.mtmd_input_chunks_size(chunks)
            for k in range(n):
                chunk = mt.mtmd_input_chunks_get(chunks, k)
                if mt.mtmd_input_chunk_get_type(chunk) == mt.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                    if mt.mtmd_helper_eval_chunk_single(ctx, llm.ctx, chunk, n_past.value, 0, llm.n_batch,
                                                        k == n - 1, ctypes.byref(n_past)) != 0:
                        raise RuntimeError("libmtmd could not decode the image")
                else:
                    eval_text(mt, ctx, llm, chunk, n_past, logits=k == n - 1)
        finally:
            mt.mtmd_input_chunks_free(chunks)
            mt.mtmd_bitmap_free(bitmap)
        out, token, buf = b"", (ll.llama_token * 1)(), ctypes.create_string_buffer(256)
        for _ in range(MAX_ANSWER_TOKENS):
            token[0] = llm.sample()
            if ll.llama_vocab_is_eog(vocab, token[0]):
                break
            n = ll.llama_token_to_piece(vocab, token[0], buf, len(buf), 0, False)
            out += buf.raw[:n]
            if ll.llama_decode(llm.ctx, ll.llama_batch_get_one(token, 1)) != 0:
                raise RuntimeError("llama_decode failed")
        return out.decode("utf-8", "replace").strip()

    return lambda questions, images: [answer(q, i) for q, i in zip(questions, images)]


def accuracy(answer, items, images: Path) -> dict:
    from edgelmm.eval.evaluate import evaluate

    report = evaluate(answer, items, images, progress=False)
    return {"exact_match": report["exact_match"],
            "per_type": {t: r["exact_match"] for t, r in report["per_type"].items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--data", required=True, type=Path, help="eval items (images/ beside them)")
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import edgelmm
    from edgelmm.eval.evaluate import read_eval_items, runtime_answerer
    from edgelmm.export.bundle import export_bundle
    from edgelmm.importers.gguf_pair import import_gguf

    items = read_eval_items(args.data, args.limit)
    images = args.data.parent / "images"
    with tempfile.TemporaryDirectory() as tmp:
        original = export_bundle(args.checkpoint, Path(tmp) / "original", quant="q4_k_m", vision="fp32", mmproj=True)
        imported = import_gguf(original / "lm-q4_k_m.gguf", original / "mmproj-f16.gguf", Path(tmp) / "imported")
        parity = embedding_parity(original, imported, sorted({images / it["image"] for it in items})[:100],
                                  args.threads)
        answers = {}
        for name, bundle in (("original bundle (edgelmm)", original), ("imported bundle (edgelmm)", imported)):
            model = edgelmm.load(bundle, n_threads=args.threads)
            answers[name] = accuracy(runtime_answerer(model), items, images)
            model.close()
        answers["llama.cpp's own path on the pair"] = accuracy(mtmd_answerer(imported, args.threads), items, images)
    cpu = cpu_description()
    machine = f"{cpu['cpu']}, {cpu['cpu_count']} cores, {' '.join(cpu['flags'])}"
    report = {"machine": machine, "platform": platform.platform(), "checkpoint": str(args.checkpoint),
              "questions": len(items), "created": datetime.datetime.now().isoformat(timespec="seconds"),
              "embeddings": parity, "answers": answers}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "import_parity.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "import_parity.md").write_text(markdown(report))
    chart(report, RESULTS / "import_parity.png")
    print(markdown(report))


def markdown(report: dict) -> str:
    e = report["embeddings"]
    lines = [f"# Import parity: {Path(report['checkpoint']).name}, {report['questions']} questions",
             "", f"Machine: {report['machine']}", "",
             "| embeddings compared | min cosine | median cosine | images |", "|---|---|---|---|",
             f"| imported graph vs original graph, same pixels | {e['graph']['min']:.6f} | "
             f"{e['graph']['median']:.6f} | {e['graph']['n']} |",
             f"| llama.cpp (libmtmd, CLS appended) vs imported graph, same letterbox | "
             f"{e['llama_cpp_layout']['min']:.4f} | {e['llama_cpp_layout']['median']:.4f} | "
             f"{e['llama_cpp_layout']['n']} |", "",
             "| answers from | exact match |", "|---|---|"]
    lines += [f"| {name} | {r['exact_match']:.1%} |" for name, r in report["answers"].items()]
    return "\n".join(lines) + "\n"


def chart(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["answers"])
    values = [report["answers"][n]["exact_match"] * 100 for n in names]
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.barh(names, values, color=["#4477aa", "#66ccee", "#ee6677"])
    for y, v in enumerate(values):
        ax.text(v + 0.5, y, f"{v:.1f}%", va="center")
    ax.set_xlim(0, 100)
    ax.invert_yaxis()
    ax.set_xlabel(f"exact match, {report['questions']} held-out questions")
    ax.set_title(f"The demo model through its GGUF pair ({report['machine']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
