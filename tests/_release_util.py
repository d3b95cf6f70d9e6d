"""Shared helpers for the export, indicator and release tests: literal samples and images."""

from __future__ import annotations

import json
import os
from pathlib import Path

from vlitc.ops.base import OpContext
from vlitc.records import sample


def make_image(path: Path, size=(64, 48), color=(200, 30, 30)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def img(name: str, root: str = "coco") -> dict:
    return {"root": root, "path": name, "width": 64, "height": 48}


def conv(sid: str, task: str, q: str, a: str, image: dict | None = None, split: str = "train",
         source: str = "coco", **meta) -> dict:
    return sample(sid, task, [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                  source=source, image=image, meta={"split": split, **meta})


def context(tmp_path: Path, **kw) -> OpContext:
    """A context whose ``coco`` images live in tmp_path/images/coco (the one image folder, so
    exports name images by their path in it) and whose out_dir is tmp_path/out."""
    root = tmp_path / "images" / "coco"
    root.mkdir(parents=True, exist_ok=True)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return OpContext(seed=7, recipe_dir=tmp_path, out_dir=out, image_roots={"coco": root}, **kw)


def demo_samples(tmp_path: Path) -> list[dict]:
    """Three image samples (one multi-turn, one in validation) and a text-only one."""
    for name, color in (("a.png", (255, 0, 0)), ("b.png", (0, 255, 0)), ("c.png", (0, 0, 255))):
        make_image(tmp_path / "images" / "coco" / name, color=color)
    multi = sample("conv/b/0", "conv", [
        {"role": "user", "content": "What color is it?"},
        {"role": "assistant", "content": "It is green."},
        {"role": "user", "content": "Is it bright?"},
        {"role": "assistant", "content": "Yes, very bright."}],
        source="coco", image=img("b.png"), meta={"split": "train"})
    return [
        conv("caption/a/0", "caption", "Describe the image briefly.", "A red square.", img("a.png")),
        multi,
        conv("caption/c/0", "caption", "Describe the image briefly.", "A blue square.",
             img("c.png"), split="validation"),
        conv("text/0", "text", "Name a primary color.", "Red.", None, source="alpaca"),
    ]


IMAGE_TOKEN_INDEX = -200


def llava_reader(path, image_folder):
    """What LLaVA's LazySupervisedDataset does with a data file, written from its training code:
    json.load the list, take sources[i]["conversations"], open the image when "image" is in the
    record, move <image> to the front of its turn, check roles alternate human/gpt, and split the
    prompt on <image> to insert the image token index."""
    from PIL import Image

    list_data_dict = json.load(open(path))
    items = []
    for sources in list_data_dict:
        has_image = "image" in sources
        if has_image:
            image = Image.open(os.path.join(image_folder, sources["image"])).convert("RGB")
            assert image.size[0] > 0
        convs = [dict(c) for c in sources["conversations"]]
        if has_image:
            for sentence in convs:
                if "<image>" in sentence["value"]:
                    sentence["value"] = "<image>\n" + sentence["value"].replace("<image>", "").strip()
        roles = {"human": "USER", "gpt": "ASSISTANT"}
        prompt = ""
        for j, sentence in enumerate(convs):
            role = roles[sentence["from"]]
            assert role == ("USER", "ASSISTANT")[j % 2]
            prompt += f"{role}: {sentence['value']} "
        chunks = prompt.split("<image>")
        ids = [tok for i, c in enumerate(chunks) for tok in ([IMAGE_TOKEN_INDEX] if i else []) + [c]]
        items.append({"has_image": has_image, "n_image_tokens": ids.count(IMAGE_TOKEN_INDEX)})
    return items


def demo_recipe_data(repo_root: Path) -> dict:
    """``recipes/demo.yaml`` as data, its sources' paths made absolute (to write elsewhere)."""
    import yaml

    demo = repo_root / "recipes"
    r = yaml.safe_load((demo / "demo.yaml").read_text())
    for src in r["sources"].values():
        for key in ("images", "captions", "instances", "questions", "annotations"):
            if key in src:
                src[key] = str(demo / src[key])
    return r


def one_task_recipe(tmp_path: Path, repo_root: Path, generator: dict, task: dict) -> Path:
    """The demo recipe cut to three COCO images, one generator ``llm`` and one task ``name:
    spec``, the structure filter and a report (no response indicator): written, its path."""
    import yaml

    r = demo_recipe_data(repo_root)
    r["sources"] = {"coco": {**r["sources"]["coco"], "sample": 3}}
    r["generators"] = {"llm": generator}
    r["tasks"] = task
    r.pop("balance", None)
    r["filters"] = [{"type": "structure"}]
    r["report"] = {"type": "release", "indicators": {"response": False}}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(r, sort_keys=False))
    return path
