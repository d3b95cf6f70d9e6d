"""The shipped demo data is what the generator script makes, and its ground truth is exact."""

from __future__ import annotations

import importlib.util
import json

import pytest
from _core_util import DEMO_DATA, ROOT
from PIL import Image


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("make_demo_data", ROOT / "scripts" / "make_demo_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path_factory.mktemp("demo")
    mod.generate(out)
    return out


@pytest.mark.parametrize("name", ["captions_demo.json", "instances_demo.json",
                                  "vqa_questions_demo.json", "vqa_annotations_demo.json"])
def test_shipped_annotations_match_the_generator(generated, name):
    assert (generated / "annotations" / name).read_bytes() == (DEMO_DATA / "annotations" / name).read_bytes()


def test_shipped_images_match_the_generator_pixel_for_pixel(generated):
    for path in sorted((DEMO_DATA / "images").glob("*.png")):
        with Image.open(path) as a, Image.open(generated / "images" / path.name) as b:
            assert a.size == b.size and a.tobytes() == b.tobytes()


def test_boxes_enclose_exactly_the_coloured_pixels():
    inst = json.loads((DEMO_DATA / "annotations" / "instances_demo.json").read_text())
    ann = next(a for a in inst["annotations"] if a["category_id"] == 2)  # a square
    img = next(i for i in inst["images"] if i["id"] == ann["image_id"])
    x, y, w, h = ann["bbox"]
    with Image.open(DEMO_DATA / "images" / img["file_name"]) as im:
        bg = im.getpixel((0, 0))
        assert im.getpixel((x, y)) != bg and im.getpixel((x + w - 1, y + h - 1)) != bg
        assert im.getpixel((x - 1, y)) == bg and im.getpixel((x + w, y + h - 1)) == bg
