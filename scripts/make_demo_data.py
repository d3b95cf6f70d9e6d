"""Generate the demo dataset: synthetic scenes of coloured shapes with exact ground truth.

Writes, in the published formats, under ``recipes/data/demo/`` (or the folder given):

    images/000000000001.png ...                 PNG scenes, 160 x 120
    annotations/captions_demo.json              COCO captions format
    annotations/instances_demo.json             COCO instances format (boxes are exact)
    annotations/vqa_questions_demo.json         VQA v2 questions format
    annotations/vqa_annotations_demo.json       VQA v2 annotations format (10 answers each)

Everything is derived from one seeded random generator, so the files are the same on every run;
tests use the same generator to know the true boxes, counts and colours.

    python scripts/make_demo_data.py [OUT_DIR] [--images N]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 200, 30)}
WIDTH, HEIGHT = 160, 120
NUMBERS = ("zero", "one", "two", "three", "four")


def scene(rng: random.Random) -> list[dict]:
    """Up to four non-overlapping shapes, each {shape, colour, box=[x, y, w, h]}."""
    objs: list[dict] = []
    for _ in range(rng.randint(1, 4)):
        for _try in range(30):
            size = rng.choice((18, 24, 30, 36))
            x, y = rng.randint(2, WIDTH - size - 2), rng.randint(2, HEIGHT - size - 2)
            box = [x, y, size, size]
            if all(_apart(box, o["box"]) for o in objs):
                objs.append({"shape": rng.choice(SHAPES), "colour": rng.choice(sorted(COLOURS)), "box": box})
                break
    return objs


def _apart(a: list[int], b: list[int], gap: int = 4) -> bool:
    return (a[0] + a[2] + gap <= b[0] or b[0] + b[2] + gap <= a[0]
            or a[1] + a[3] + gap <= b[1] or b[1] + b[3] + gap <= a[1])


def draw(objs: list[dict], path: Path) -> None:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (WIDTH, HEIGHT), (245, 245, 240))
    d = ImageDraw.Draw(img)
    for o in objs:
        x, y, w, h = o["box"]
        fill = COLOURS[o["colour"]]
        if o["shape"] == "circle":
            d.ellipse([x, y, x + w - 1, y + h - 1], fill=fill)
        elif o["shape"] == "square":
            d.rectangle([x, y, x + w - 1, y + h - 1], fill=fill)
        else:
            d.polygon([(x + w / 2, y), (x, y + h - 1), (x + w - 1, y + h - 1)], fill=fill)
    img.save(path, format="PNG", optimize=False, compress_level=6)


def _phrase(o: dict) -> str:
    return f"{o['colour']} {o['shape']}"


def _where(o: dict) -> str:
    cx = o["box"][0] + o["box"][2] / 2
    return "on the left" if cx < WIDTH / 3 else ("on the right" if cx > 2 * WIDTH / 3 else "in the middle")


def captions(objs: list[dict], rng: random.Random) -> list[str]:
    names = [_phrase(o) for o in objs]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    art = lambda s: ("an " if s[0] in "aeiou" else "a ") + s  # noqa: E731
    listed_a = ", ".join(art(n) for n in names[:-1]) + (" and " if len(names) > 1 else "") + art(names[-1])
    n = len(objs)
    out = [
        f"{listed_a[0].upper()}{listed_a[1:]} on a plain light background.",
        f"A simple drawing with {NUMBERS[n]} shape{'s' if n != 1 else ''}: {listed}.",
        f"There is {art(names[0])} {_where(objs[0])} of the picture.",
        f"{NUMBERS[n].capitalize()} coloured shape{'s' if n != 1 else ''} on a white canvas.",
        f"A flat illustration showing {listed_a}.",
    ]
    rng.shuffle(out)
    return out


def questions(objs: list[dict], rng: random.Random) -> list[tuple[str, str, str, str]]:
    """(question, answer, question_type, answer_type) triples with exact answers."""
    shape = rng.choice(SHAPES)
    count = sum(o["shape"] == shape for o in objs)
    o = rng.choice(objs)
    colour = rng.choice(sorted(COLOURS))
    present = any(x["colour"] == colour and x["shape"] == o["shape"] for x in objs)
    return [
        (f"How many {shape}s are there?", str(count), "how many", "number"),
        (f"What color is the {o['shape']}?" if sum(x["shape"] == o["shape"] for x in objs) == 1
         else "What color is the largest shape?",
         o["colour"] if sum(x["shape"] == o["shape"] for x in objs) == 1
         else max(objs, key=lambda x: (x["box"][2], -x["box"][0]))["colour"], "what color", "other"),
        (f"Is there a {colour} {o['shape']}?", "yes" if present else "no", "is there a", "yes/no"),
    ]


def generate(out: Path, n_images: int = 24, seed: int = 20231122) -> None:
    rng = random.Random(seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    info = {"description": "vlitc demo: synthetic shapes", "version": "1.0", "year": 2026,
            "contributor": "vlitc", "date_created": "2026-11-22"}
    licenses = [{"id": 1, "name": "CC0 1.0", "url": "https://creativecommons.org/publicdomain/zero/1.0/"}]
    cats = [{"id": i + 1, "name": s, "supercategory": "shape"} for i, s in enumerate(SHAPES)]
    images, caps, anns, qs, qas = [], [], [], [], []
    for i in range(1, n_images + 1):
        objs = scene(rng)
        fname = f"{i:012d}.png"
        draw(objs, out / "images" / fname)
        images.append({"id": i, "file_name": fname, "width": WIDTH, "height": HEIGHT, "license": 1})
        for c in captions(objs, rng):
            caps.append({"id": len(caps) + 1, "image_id": i, "caption": c})
        for o in objs:
            x, y, w, h = o["box"]
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": SHAPES.index(o["shape"]) + 1,
                         "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0,
                         "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]})
        for k, (q, a, qtype, atype) in enumerate(questions(objs, rng)):
            qid = i * 10 + k
            qs.append({"image_id": i, "question": q, "question_id": qid})
            answers = [{"answer": a, "answer_confidence": "yes", "answer_id": k + 1} for k in range(10)]
            qas.append({"question_id": qid, "image_id": i, "question_type": qtype, "answer_type": atype,
                        "multiple_choice_answer": a, "answers": answers})
    dump = lambda name, obj: (out / "annotations" / name).write_text(  # noqa: E731
        json.dumps(obj, indent=1, sort_keys=True) + "\n")
    dump("captions_demo.json", {"info": info, "licenses": licenses, "images": images, "annotations": caps})
    dump("instances_demo.json", {"info": info, "licenses": licenses, "images": images,
                                 "annotations": anns, "categories": cats})
    dump("vqa_questions_demo.json", {"info": info, "license": licenses[0], "task_type": "Open-Ended",
                                     "data_type": "mscoco", "data_subtype": "demo", "questions": qs})
    dump("vqa_annotations_demo.json", {"info": info, "license": licenses[0], "data_type": "mscoco",
                                       "data_subtype": "demo", "annotations": qas})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default=str(Path(__file__).resolve().parents[1] / "recipes/data/demo"))
    ap.add_argument("--images", type=int, default=24)
    args = ap.parse_args()
    generate(Path(args.out), args.images)
    print(f"wrote demo data to {args.out}")


if __name__ == "__main__":
    main()
