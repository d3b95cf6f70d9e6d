"""Images in requests: keys, preparation, image tokens, and both providers through their real
SDKs against the loopback server (which answers from the pixels it receives)."""

from __future__ import annotations

import base64
import hashlib
import io

import pytest
from PIL import Image

from vlitc.errors import ConfigurationError
from vlitc.llm import Request, session
from vlitc.llm.fakeserver import FakeServer, decode_images
from vlitc.llm.types import base_request, canonical, sample_key
from vlitc.llm.vision import (
    ImageSource,
    ImageStore,
    Prep,
    anthropic_tokens,
    image_part,
    image_tokens,
    openai_tokens,
    text_part,
)


def _square(path, colour, size=(320, 240), mode="RGB", exif_orientation=None):
    im = Image.new(mode, size, (250, 250, 250) if mode == "RGB" else (250, 250, 250, 255))
    w, h = size
    fill = colour if mode == "RGB" else (*colour, 255)
    im.paste(Image.new(mode, (w // 2, h // 2), fill), (w // 4, h // 4))
    if exif_orientation:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        im.save(path, format="JPEG", exif=exif, quality=95)
    else:
        im.save(path, format="PNG")
    return ImageSource(hashlib.sha256(path.read_bytes()).hexdigest(), str(path))


def _ask(src: ImageSource, text: str = "Describe the image.") -> Request:
    return Request(messages=[{"role": "system", "content": "You describe images."},
                             {"role": "user", "content": [image_part(src), text_part(text)]}])


@pytest.fixture
def server():
    return FakeServer(keep_bodies=True).start_in_thread()


@pytest.fixture
def images(tmp_path):
    return {"red": _square(tmp_path / "red.png", (220, 40, 40)),
            "blue": _square(tmp_path / "blue.png", (40, 80, 220), size=(3000, 1000))}


# keys ---------------------------------------------------------------------------------------

def test_text_only_request_keys_are_unchanged_by_content_parts():
    req = Request(messages=[{"role": "user", "content": "A cat."}], temperature=0.5)
    base = base_request("openai", "gpt-4o-mini", req, {})
    legacy = {"provider": "openai", "model": "gpt-4o-mini",
              "messages": [{"role": "user", "content": "A cat."}], "temperature": 0.5,
              "top_p": None, "max_tokens": None, "seed": None, "stop": None,
              "response_format": None}
    assert canonical(base) == canonical(legacy)
    assert sample_key(base, 0) == hashlib.sha256(canonical(legacy)).hexdigest()


def test_image_key_holds_hash_and_resolved_preparation_never_bytes(tmp_path, images):
    store = ImageStore(tmp_path / "store")
    src = images["blue"]  # 3000 x 1000
    prep = Prep.for_generator("openai", {"max_side": 1024, "detail": "low"})
    base = base_request("openai", "m", _ask(src), {}, image_key=lambda s: store.key_part(s, prep))
    part = base["messages"][1]["content"][0]
    assert part == {"type": "image", "sha256": src.sha256, "size": [1024, 341],
                    "format": "jpeg", "quality": 90, "detail": "low"}
    assert len(canonical(base)) < 600  # no bytes in the key
    # max_side above both images' sizes: the small image's key does not change
    a = Prep.for_generator("openai", {"max_side": 2048})
    b = Prep.for_generator("openai", {"max_side": 4096})
    red = images["red"]
    assert store.key_part(red, a) == store.key_part(red, b)
    assert store.key_part(src, a) != store.key_part(src, b)
    assert store.prepared_count == 0  # keys come from headers: nothing was prepared
    store.close()


def test_endpoint_revision_and_mock_script_are_part_of_the_key(tmp_path):
    req = [Request(messages=[{"role": "user", "content": "Hi."}])]
    keys = {}
    for name, cfg in {"default": {"provider": "openai", "model": "m"},
                      "official": {"provider": "openai", "model": "m",
                                   "base_url": "https://api.openai.com/v1"},
                      "other": {"provider": "openai", "model": "m", "base_url": "http://h:1/v1"},
                      "pinned": {"provider": "openai", "model": "m", "base_url": "http://h:1/v1",
                                 "model_revision": "r1"},
                      "mock_a": {"provider": "mock", "responses": ["a"]},
                      "mock_b": {"provider": "mock", "responses": ["b"]}}.items():
        with session({"generators": {"g": cfg}}, tmp_path / name) as s:
            keys[name] = s.client("g")._plan(req[0]).keys[0]
    assert keys["default"] == keys["official"]
    assert len({keys["default"], keys["other"], keys["pinned"]}) == 3
    assert keys["mock_a"] != keys["mock_b"]


# preparation --------------------------------------------------------------------------------

def test_preparation_orients_converts_resizes_and_is_done_once(tmp_path):
    src = _square(tmp_path / "rot.jpg", (40, 170, 60), size=(400, 200), exif_orientation=6)
    rgba = _square(tmp_path / "alpha.png", (40, 80, 220), size=(100, 100), mode="RGBA")
    store = ImageStore(tmp_path / "store")
    prep = Prep.for_generator("anthropic", {"max_side": 100, "format": "png"})
    out = store.prepared(src, prep)
    assert (out.width, out.height) == (50, 100)  # rotated by EXIF, then fitted in 100 px
    with Image.open(io.BytesIO(out.data)) as im:
        assert im.format == "PNG" and im.mode == "RGB" and im.size == (50, 100)
    assert store.prepared(src, prep).sha256 == out.sha256 and store.prepared_count == 1
    fresh = ImageStore(tmp_path / "store")  # another build: read from disk, not prepared again
    assert fresh.prepared(src, prep).data == out.data and fresh.prepared_count == 0
    a = store.prepared(rgba, Prep.for_generator("openai", {"max_pixels": 2500}))
    with Image.open(io.BytesIO(a.data)) as im:
        assert im.format == "JPEG" and im.mode == "RGB" and im.size == (50, 50)
    store.close()
    fresh.close()


def test_boxes_are_drawn_on_a_copy_named_by_its_hash(tmp_path, images):
    store = ImageStore(tmp_path / "store")
    d = store.derive(images["red"], [[10, 10, 100, 80], [150, 100, 300, 230]], numbered=True)
    path = tmp_path / "store" / "derived" / d["path"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == d["sha256"]
    assert (d["width"], d["height"]) == (320, 240)
    again = store.derive(images["red"], [[10, 10, 100, 80], [150, 100, 300, 230]], numbered=True)
    assert again == d
    [seen] = decode_images({"messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": base64.b64encode(path.read_bytes()).decode()}}]}]})
    assert seen["marked"] and seen["dominant"] == "red"
    store.close()


@pytest.mark.parametrize("damage", ["truncated", "jpeg", "garbage"])
def test_a_damaged_derived_image_is_drawn_again_not_used(tmp_path, images, damage):
    store = ImageStore(tmp_path / "store")
    boxes = [[10, 10, 100, 80]]
    d = store.derive(images["red"], boxes, numbered=False)
    path = tmp_path / "store" / "derived" / d["path"]
    good = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "jpeg":  # a valid image, but not the PNG this name stands for
        Image.new("RGB", (320, 240), "blue").save(path, format="JPEG")
    else:
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    assert store.derive(images["red"], boxes, numbered=False) == d
    assert path.read_bytes() == good
    store.close()


def test_image_tokens_follow_each_providers_rule():
    assert openai_tokens(1024, 1024, "high", "gpt-4o") == 85 + 170 * 4  # 768x768: 2x2 tiles
    assert openai_tokens(2048, 4096, "high", "gpt-4o") == 85 + 170 * 6  # 768x1536: 2x3 tiles
    assert openai_tokens(4000, 3000, "low", "gpt-4o") == 85
    assert openai_tokens(512, 512, "auto", "gpt-4o-mini") == 2833 + 5667
    assert anthropic_tokens(1000, 1000) == 1334
    assert image_tokens("openai", "gpt-4o", 1024, 1024, "high", {"image_tile_tokens": 100}) == 485
    assert image_tokens("anthropic", "c", 750, 100, None, {"image_pixels_per_token": 75}) == 1000
    assert image_tokens("openai", "local", 64, 64, None, {"image_tokens": 7}) == 7


# providers through the real SDKs ------------------------------------------------------------

def _gens(server, **image):
    return {"gpt": {"provider": "openai", "model": "gpt-4o", "base_url": server.base_url,
                    "vision": True, "image": image, "retry_backoff": 0.01},
            "claude": {"provider": "anthropic", "model": "claude-sonnet-4",
                       "base_url": f"http://127.0.0.1:{server.port}", "vision": True,
                       "api_key_env": "VLITC_TEST_KEY", "retry_backoff": 0.01}}


@pytest.mark.parametrize("gen", ["gpt", "claude"])
def test_server_receives_the_prepared_image_and_answers_from_its_pixels(
        tmp_path, server, images, gen, monkeypatch):
    monkeypatch.setenv("VLITC_TEST_KEY", "k")
    reqs = [_ask(images["red"]), _ask(images["blue"])]
    with session({"generators": _gens(server, detail="high")}, tmp_path / "c") as s:
        client = s.client(gen)
        out = client.run(reqs, step="task:t")
        prepared = [s.images.prepared(src, client.prep) for src in (images["red"], images["blue"])]
        usage = s.usage()
    got = [r["images"][0] for r in server.log]
    assert [(g["sha256"], g["width"], g["height"]) for g in got] == [
        (p.sha256, p.width, p.height) for p in prepared]
    assert prepared[1].width == (2048 if gen == "gpt" else 1568)  # each provider's own limit
    assert "dominant colour is red" in out[0].texts[0] and "sha256 " + prepared[0].sha256[:12] in out[0].texts[0]
    assert "dominant colour is blue" in out[1].texts[0]
    assert got[0]["detail"] == ("high" if gen == "gpt" else None)
    assert usage["total"]["images"] == 2 and usage["total"]["image_tokens"] > 0
    assert usage["images_prepared"] == 2
    # what the server counted for the images is what the accounting says they cost
    texts_only = sum(len(str(m.get("content") if isinstance(m.get("content"), str) else
                             " ".join(p.get("text", "") for p in m["content"] if "text" in p)))
                     for r in server.log for m in r["body"]["messages"])
    assert usage["total"]["prompt_tokens"] >= usage["total"]["image_tokens"] + texts_only // 4


def test_rebuild_sends_nothing_and_max_side_or_detail_resend_only_affected(
        tmp_path, server, images):
    reqs = [_ask(images["red"]), _ask(images["blue"]),
            Request(messages=[{"role": "user", "content": "No image here."}])]

    def build(**image):
        before = len(server.log)
        with session({"generators": _gens(server, **image)}, tmp_path / "c") as s:
            s.client("gpt").run(reqs, step="task:t")
            prepared = s.images.prepared_count
        return [r["images"][0]["sha256"] if r.get("images") else "text"
                for r in server.log[before:]], prepared

    sent, prepared = build(max_side=2048)
    assert len(sent) == 3 and prepared == 2
    assert build(max_side=2048) == ([], 0)  # a rebuild sends nothing and prepares nothing
    sent, prepared = build(max_side=1024)  # only the 3000x1000 image changes
    assert len(sent) == 1 and sent[0] != "text" and prepared == 1
    sent, _ = build(max_side=1024, detail="low")  # both image requests, not the text one
    assert len(sent) == 2 and "text" not in sent


def test_a_vision_request_to_a_text_generator_is_refused(tmp_path, server, images):
    gens = {"g": {"provider": "openai", "model": "m", "base_url": server.base_url}}
    with session({"generators": gens}, tmp_path) as s, pytest.raises(
            ConfigurationError, match="does not declare vision: true"):
        s.client("g").run([_ask(images["red"])], step="task:t")
    assert server.log == []


SAMPLING = {"temperature": 0.8, "top_p": 0.9, "max_tokens": 77, "seed": 5, "stop": ["###"]}


def test_every_sampling_parameter_reaches_openai_through_the_sdk(tmp_path, server):
    gens = {"g": {"provider": "openai", "model": "m", "base_url": server.base_url}}
    with session({"generators": gens}, tmp_path) as s:
        s.client("g").run([Request(messages=[{"role": "user", "content": "x, in JSON"}], n=3,
                                   response_format={"type": "json_object"}, **SAMPLING)])
    [row] = server.log
    body = row["body"]
    assert {k: body[k] for k in SAMPLING} == SAMPLING and body["n"] == 3
    assert body["response_format"] == {"type": "json_object"}


def test_every_sampling_parameter_reaches_anthropic_through_the_installed_sdk(
        tmp_path, server, monkeypatch):
    """anthropic 2.x dropped temperature and top_p from messages.create(): they still reach the
    API (in the JSON body), stop becomes stop_sequences, and n samples cost n calls."""
    monkeypatch.setenv("VLITC_TEST_KEY", "k")
    gens = {"c": {"provider": "anthropic", "model": "claude-3-5-haiku", "api_key_env": "VLITC_TEST_KEY",
                  "base_url": f"http://127.0.0.1:{server.port}", "retry_backoff": 0.01}}
    with session({"generators": gens}, tmp_path) as s:
        [resp] = s.client("c").run([Request(messages=[{"role": "system", "content": "S."},
                                                      {"role": "user", "content": "x"}],
                                            n=2, **SAMPLING)])
    assert resp.error is None and len(resp.texts) == 2
    assert len(server.log) == 2  # no n in the Messages API
    body = server.log[0]["body"]
    assert body["temperature"] == 0.8 and body["top_p"] == 0.9 and body["max_tokens"] == 77
    assert body["stop_sequences"] == ["###"]
    assert body["system"] == [{"type": "text", "text": "S.", "cache_control": {"type": "ephemeral"}}]
    assert "seed" not in body and "n" not in body and "stop" not in body
