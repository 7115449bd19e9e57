"""Word recall of `edgelmm read` on rendered text of known content.

    python benchmarks/ocr_recall.py

Signs, labels and notices that blind users photograph are rendered as one page per condition: in
Pillow's built-in font and the DejaVu fonts where the system has them, at several text sizes (the
font size in pixels), sharp and blurred. Word recall: the share of the page's words (case-insensitive,
split on non-letters, so digits and punctuation do not count) that the OCR output holds, counted with
their repetitions.

Results: benchmarks/results/ocr_recall.{json,md,png}.
"""

from __future__ import annotations

import datetime
import json
import re
from collections import Counter
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
TEXTS = ["Emergency exit keep clear", "Platform 4 trains to Berlin", "Best before 12 March",
         "Take two tablets twice daily", "Please ring the bell for service", "Ground floor toilets and lifts",
         "Caution wet floor", "Open Monday to Friday from nine to five"]
SIZES = [12, 16, 20, 28, 40]
BLURS = [0, 1, 2]
FONT_FILES = {"DejaVu Sans": "DejaVuSans.ttf", "DejaVu Serif": "DejaVuSerif.ttf", "DejaVu Sans Mono": "DejaVuSansMono.ttf"}
FONT_FOLDERS = [Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/TTF"), Path("/Library/Fonts")]


def fonts() -> dict:
    """Pillow's built-in font, and the DejaVu fonts this machine has."""
    out = {"Pillow built-in": None}
    for name, file in FONT_FILES.items():
        path = next((folder / file for folder in FONT_FOLDERS if (folder / file).is_file()), None)
        if path:
            out[name] = path
    return out


def page(font_path, size: int, blur: int) -> Image.Image:
    font = ImageFont.load_default(size=size) if font_path is None else ImageFont.truetype(str(font_path), size)
    line = int(size * 2)
    img = Image.new("RGB", (max(400, size * 30), line * len(TEXTS) + size * 2), "white")
    draw = ImageDraw.Draw(img)
    for k, text in enumerate(TEXTS):
        draw.text((size, size + k * line), text, fill="black", font=font)
    return img.filter(ImageFilter.GaussianBlur(blur)) if blur else img


def words(text: str) -> Counter:
    return Counter(w for w in re.split(r"[^a-z]+", text.lower()) if w)


def recall(truth: Counter, found: Counter) -> float:
    return sum(min(n, found[w]) for w, n in truth.items()) / sum(truth.values())


def main() -> None:
    from edgelmm.ocr import read_text

    truth = words(" ".join(TEXTS))
    rows = []
    for name, path in fonts().items():
        for size in SIZES:
            for blur in BLURS:
                lines = read_text(page(path, size, blur))
                rows.append({"font": name, "size": size, "blur": blur,
                             "recall": recall(truth, words(" ".join(l.text for l in lines)))})
                print(rows[-1])
    clean_20 = [r["recall"] for r in rows if r["blur"] == 0 and r["size"] >= 20]
    report = {"created": datetime.datetime.now().isoformat(timespec="seconds"), "words_per_page": sum(truth.values()),
              "rows": rows, "clean_at_least_20px": sum(clean_20) / len(clean_20)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ocr_recall.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "ocr_recall.md").write_text(markdown(report))
    chart(report, RESULTS / "ocr_recall.png")
    print(markdown(report))


def markdown(r: dict) -> str:
    names = list(dict.fromkeys(x["font"] for x in r["rows"]))
    lines = [f"# OCR word recall ({r['words_per_page']} words per page)", "",
             f"Clean text at 20 px and more, all fonts: **{r['clean_at_least_20px']:.1%}**", "",
             "| font | blur | " + " | ".join(f"{s} px" for s in SIZES) + " |", "|---|---|" + "---|" * len(SIZES)]
    for name in names:
        for blur in BLURS:
            cells = [next(x["recall"] for x in r["rows"] if x["font"] == name and x["blur"] == blur and x["size"] == s)
                     for s in SIZES]
            lines.append(f"| {name} | {blur} px | " + " | ".join(f"{c:.0%}" for c in cells) + " |")
    return "\n".join(lines) + "\n"


def chart(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name in dict.fromkeys(x["font"] for x in r["rows"]):
        for blur, style in zip(BLURS, ["-", "--", ":"]):
            xs = [x for x in r["rows"] if x["font"] == name and x["blur"] == blur]
            ax.plot([x["size"] for x in xs], [100 * x["recall"] for x in xs], style, marker="o", markersize=3,
                    label=f"{name}, blur {blur}")
    ax.axhline(95, color="#ee6677", linewidth=1)
    ax.set_xlabel("font size (px)")
    ax.set_ylabel("word recall (%)")
    ax.set_ylim(0, 102)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
