"""A collaborator rebuilds a release: the card's rebuild command works as printed, a copy of the
data (new mtimes, same bytes) rebuilds with no difference, and the card says where images are."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys

import yaml
from _core_util import DEMO_DATA, DEMO_RECIPE, demo_copy, ran

from tests._core_util import needs
from vlitc.api import build, frozen_rebuild
from vlitc.release import layout

QA = "Question:\nWhat shape is shown?\n===\nAnswer:\nA {{ 'coloured' }} shape, seen in item {{ index }}."


def _project(root):
    """The demo recipe with its data beside it (relative paths) and a generated task."""
    shutil.copytree(DEMO_DATA, root / "data" / "demo")
    r = yaml.safe_load(DEMO_RECIPE.read_text())
    r["report"] = {"indicators": {"response": False}}
    r["generators"] = {"m": {"provider": "mock", "model": "mock-1", "template": QA}}
    r["tasks"]["conv"] = {"kind": "generate", "source": "coco", "generator": "m",
                          "prompt": "llava/conversation"}
    r["balance"]["mix"] = {"brief_caption": 0.5, "conv": 0.5}
    path = root / "demo.yaml"
    path.write_text(yaml.safe_dump(r, sort_keys=False))
    return path


def _rebuild_commands(release):
    card = (release / layout.CARD).read_text()
    block = card.split("## Rebuild\n", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_the_rebuild_command_the_card_prints_runs_and_rebuilds_the_same_bytes(tmp_path):
    recipe = _project(tmp_path / "p")
    build(recipe, out_dir=tmp_path / "rel", cache_dir=tmp_path / "c1")
    commands = _rebuild_commands(tmp_path / "rel")
    assert commands == ["vlitc build <recipe.yaml> --frozen-from <release> --out rebuilt"]
    argv = shlex.split(commands[0].replace("<recipe.yaml>", str(recipe))
                       .replace("<release>", str(tmp_path / "rel")))
    assert argv[0] == "vlitc"
    env = {**os.environ, "VLITC_CACHE_DIR": str(tmp_path / "fresh")}  # nothing cached: frozen
    done = subprocess.run([sys.executable, "-m", "vlitc.cli.main", *argv[1:], "--quiet"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rebuilt = tmp_path / "rebuilt"
    assert layout.file_hashes(layout.read_manifest(rebuilt)) == \
        layout.file_hashes(layout.read_manifest(tmp_path / "rel"))
    assert json.loads((rebuilt / "manifest.json").read_text())["llm"]["frozen"] is True


def test_a_copy_of_the_data_with_new_mtimes_rebuilds_with_no_difference(tmp_path):
    recipe = _project(tmp_path / "a")
    build(recipe, out_dir=tmp_path / "rel", cache_dir=tmp_path / "c1")
    shutil.copytree(tmp_path / "a", tmp_path / "b", copy_function=shutil.copyfile)  # cp -r
    for p in (tmp_path / "b").rglob("*"):
        os.utime(p, ns=(1_000_000_000, 1_000_000_000))  # and surely other mtimes
    for cache in ("c1", "c2"):  # the collaborator's own cache, or the one shared with the author
        result, diffs = frozen_rebuild(tmp_path / "b" / "demo.yaml", tmp_path / "rel",
                                       out_dir=tmp_path / f"re-{cache}", cache_dir=tmp_path / cache)
        assert diffs == []
        assert result.manifest.get("llm", {}).get("calls", 0) == 0
        if cache == "c1":  # same bytes, same step keys: nothing runs again
            assert ran(result) == set()


def test_a_changed_image_still_differs_after_a_copy(tmp_path):
    recipe = _project(tmp_path / "a")
    build(recipe, out_dir=tmp_path / "rel", cache_dir=tmp_path / "c1")
    shutil.copytree(tmp_path / "a", tmp_path / "b", copy_function=shutil.copyfile)
    from PIL import Image

    image = sorted((tmp_path / "b" / "data" / "demo" / "images").iterdir())[0]
    with Image.open(image) as im:
        changed = im.convert("RGB")
    changed.putpixel((0, 0), (1, 2, 3))
    changed.save(image, format=Image.registered_extensions()[image.suffix.lower()])
    _, diffs = frozen_rebuild(tmp_path / "b" / "demo.yaml", tmp_path / "rel",
                              out_dir=tmp_path / "re", cache_dir=tmp_path / "c2")
    assert any(d.startswith("vlitc.lock: sources.coco.data/demo/images/") for d in diffs), diffs


def test_a_release_damaged_after_its_build_says_so_in_a_frozen_rebuild(tmp_path):
    recipe = _project(tmp_path / "p")
    build(recipe, out_dir=tmp_path / "rel", cache_dir=tmp_path / "c1")
    with open(tmp_path / "rel" / "train.jsonl", "a") as fh:
        fh.write("\n")
    _, diffs = frozen_rebuild(recipe, tmp_path / "rel", out_dir=tmp_path / "re",
                              cache_dir=tmp_path / "c1")
    assert diffs == ["train.jsonl: bytes differ from the manifest (in the release)"]


def test_the_card_says_where_image_paths_resolve_for_copied_and_referenced_images(tmp_path):
    needs("pyarrow")  # the card names the Parquet file among the exports
    recipe = demo_copy(tmp_path)
    recipe.write_text(recipe.read_text().replace(
        "{format: llava, path: train.json, split: train}",
        "{format: llava, path: train.json, split: train, images: copy}"))
    build(recipe, out_dir=tmp_path / "rel", cache_dir=tmp_path / "c")
    card = (tmp_path / "rel" / "README.md").read_text()
    assert ("Image paths in `train.json` are relative to the release's `images/` folder, which "
            "holds copies of the images they name.") in card
    assert (f"Image paths in `validation.json`, `train.jsonl`, `train.parquet` are relative to "
            f"the image folder `{DEMO_DATA / 'images'}`") in card
    records = json.loads((tmp_path / "rel" / "train.json").read_text())
    assert records and all((tmp_path / "rel" / "images" / r["image"]).is_file()
                           for r in records if "image" in r)
    others = json.loads((tmp_path / "rel" / "validation.json").read_text())
    assert all((DEMO_DATA / "images" / r["image"]).is_file() for r in others if "image" in r)


def test_the_image_note_names_embedded_images_as_embedded():
    from vlitc.ops.release import image_note

    recipe = {"sources": {"coco": {"type": "coco", "images": "data/images"}},
              "outputs": [{"format": "parquet", "path": "train.parquet", "images": "embed"},
                          {"format": "llava", "path": "train.json", "images": "link",
                           "image_dir": "img"}]}
    note = image_note(recipe)
    assert "Images in `train.parquet`: the pictures themselves, stored in the file" in note
    assert "Image paths in `train.json` are relative to the release's `img/` folder" in note
    assert "data/images" not in note
