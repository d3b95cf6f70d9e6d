"""CLIP image-text matching with open_clip: how well a conversation fits its image."""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any, ClassVar

from vlitc.errors import ConfigurationError, InputError
from vlitc.hashing import sha256_file
from vlitc.ops.base import Filter, OpContext
from vlitc.ops.registry import register
from vlitc.records import IMAGE_TOKEN, Sample, images_of

PROMPT = "This is a picture about this conversation: "
IMAGE_NS = "clip-image"
_MODELS: dict[tuple, Any] = {}
_LOCK = threading.Lock()
_FILE_HASHES: dict[tuple, str] = {}


class _CallCache(dict):
    def set(self, key: str, value: Any) -> None:
        self[key] = value


def file_sha256(path: Path) -> str:
    """Content hash of a file, remembered per (path, size, mtime) within the process."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _FILE_HASHES:
        _FILE_HASHES[key] = sha256_file(path)
    return _FILE_HASHES[key]


def pick_device(choice: str) -> str:
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigurationError("clip_match: device 'cuda' asked for, but no CUDA device is available")
    return choice


class ClipModel:
    """An open_clip model, its eval transform and tokenizer, and the identity of its weights."""

    def __init__(self, arch: str, pretrained: str, weights_id: str, device: str):
        import open_clip

        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                arch, pretrained=pretrained, device=device)
        except RuntimeError as e:  # unknown tag, or weights that cannot be downloaded here
            raise ConfigurationError(
                f"clip_match: cannot load {arch!r} with pretrained={pretrained!r}: {e}\n"
                "hint: give `pretrained` as a local checkpoint file when weights cannot be downloaded"
            ) from None
        self.model, self.preprocess = model.eval(), preprocess
        self.tokenizer = open_clip.get_tokenizer(arch)
        self.key, self.device = f"{arch}|{weights_id}", device

    def encode_images(self, images: list[Any]) -> Any:
        import torch

        with torch.no_grad():
            x = torch.stack([self.preprocess(im) for im in images]).to(self.device)
            f = self.model.encode_image(x).float()
        return torch.nn.functional.normalize(f, dim=-1).cpu().numpy()

    def encode_texts(self, texts: list[str]) -> Any:
        import torch

        with torch.no_grad():
            f = self.model.encode_text(self.tokenizer(texts).to(self.device)).float()
        return torch.nn.functional.normalize(f, dim=-1).cpu().numpy()


def load_model(params: dict, ctx: OpContext) -> ClipModel:
    """The model a filter's params name, loaded once per process."""
    import open_clip

    arch = params["model"]
    if arch.endswith(".json"):  # a custom architecture: an open_clip model config file
        cfg = ctx.resolve(arch)
        if not cfg.is_file():
            raise InputError("model config file not found", hint=f"looked for {cfg}")
        open_clip.add_model_config(cfg)
        arch = cfg.stem
    pretrained = params["pretrained"]
    local = ctx.resolve(pretrained)
    if local.is_file():
        pretrained, weights_id = str(local), "sha256:" + file_sha256(local)
    elif any(s in pretrained for s in ("/", "\\")) or pretrained.endswith((".pt", ".bin", ".safetensors")):
        raise InputError("checkpoint file not found", hint=f"looked for {local}")
    else:
        weights_id = pretrained
    device = pick_device(params["device"])
    key = (arch, pretrained, weights_id, device)
    with _LOCK:
        if key not in _MODELS:
            _MODELS[key] = ClipModel(arch, pretrained, weights_id, device)
        return _MODELS[key]


def texts_for(s: Sample, mode: str, prompt: str) -> list[str]:
    """The texts scored for a sample: one per exchange, or the whole conversation."""
    turns = [str(t.get("content", "")).replace(IMAGE_TOKEN, "").strip() for t in s.get("turns") or []]
    if mode == "truncate":
        return [prompt + " ".join(turns)]
    pairs = [" ".join(turns[i : i + 2]) for i in range(0, len(turns), 2)]
    return [prompt + p for p in pairs] or [prompt]


@register("filter", "clip_match")
class ClipMatchFilter(Filter):
    """Drop samples whose conversation matches its image poorly: cosine similarity of open_clip
    embeddings of the image and of ``prompt`` + the text, below ``min_score`` or outside the
    ``top_fraction`` best.

    Text longer than the model's context is handled by ``long_text``: ``turns_mean`` and
    ``turns_min`` score each exchange (question and answer) and aggregate, ``truncate`` scores
    the whole conversation cut at the context length. Image embeddings are cached per (image
    content hash, model, weights), so many samples on one image cost one image encode and a
    rebuild none. A sample with several images is scored against each (``image_scores``) and
    gets their mean. ``pretrained`` is a published tag or a local checkpoint file; ``model`` an
    open_clip architecture name or a model config JSON file. Reads: image, turns.
    Writes: stats.score, stats.turn_scores.
    """

    version = 1
    requires = ("torch", "open_clip")
    reads = ("image", "turns")
    writes = ("meta.stats",)
    params_schema: ClassVar[dict] = {
        "type": "object",
        "properties": {
            "model": {"type": "string", "default": "ViT-B-32"},
            "pretrained": {"type": "string", "default": "openai"},
            "device": {"enum": ["auto", "cpu", "cuda"], "default": "auto"},
            "batch_size": {"type": "integer", "minimum": 1, "default": 64},
            "long_text": {"enum": ["turns_mean", "turns_min", "truncate"], "default": "turns_mean"},
            "prompt": {"type": "string", "default": PROMPT},
            "min_score": {"type": "number", "minimum": -1, "maximum": 1},
            "top_fraction": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        },
        "not": {"required": ["min_score", "top_fraction"]},
        "additionalProperties": False,
    }
    keep_params = ("min_score", "top_fraction")
    key_exclude = ("device",)

    def files(self, ctx: OpContext) -> list[Path]:
        out = [ctx.resolve(self.params[k]) for k in ("model", "pretrained")
               if k in self.params and ctx.resolve(self.params[k]).is_file()]
        return out

    def measure(self, samples: list[Sample], ctx: OpContext) -> list[dict]:
        todo = [s for s in samples if s.get("image")]
        if not todo:
            return [{"score": None} for _ in samples]
        model = load_model(self.params, ctx)
        shas = {id(s): [self._sha(img, ctx) for img in images_of(s)] for s in todo}
        image_emb = self._image_embeddings(model, todo, shas, ctx)
        mode = self.params["long_text"]
        texts = {id(s): texts_for(s, mode, self.params["prompt"]) for s in todo}
        readable = {id(s) for s in todo if all(sha in image_emb for sha in shas[id(s)])}
        flat = [t for s in todo if id(s) in readable for t in texts[id(s)]]
        text_emb = iter(self._batched(model.encode_texts, flat))
        out: list[dict] = []
        for s in samples:
            sample_shas = shas.get(id(s))
            if sample_shas is None:
                out.append({"score": None})
            elif id(s) not in readable:
                missing = [img.get("path") for img, sha in zip(images_of(s), sample_shas, strict=True)
                           if sha not in image_emb]
                out.append({"score": None, "missing_image": ", ".join(map(str, missing))})
            else:
                out.append(self._score([next(text_emb) for _ in texts[id(s)]],
                                       [image_emb[sha] for sha in sample_shas], mode))
        return out

    @staticmethod
    def _score(text_rows: list, image_rows: list, mode: str) -> dict:
        """Each text against each image, aggregated over the texts (``long_text``) and then
        averaged over the images: a multi-image conversation is scored against every image."""
        per_image = []
        for row in image_rows:
            scores = [float(t @ row) for t in text_rows]
            per_image.append((min(scores) if mode == "turns_min" else sum(scores) / len(scores),
                              scores))
        out: dict = {"score": round(sum(a for a, _ in per_image) / len(per_image), 4),
                     "turn_scores": [round(x, 4) for x in per_image[0][1]]}
        if len(per_image) > 1:
            out["image_scores"] = [round(a, 4) for a, _ in per_image]
        return out

    def _batched(self, fn, items: list) -> list:
        bs = self.params["batch_size"]
        return [row for i in range(0, len(items), bs) for row in fn(items[i : i + bs])]

    def _sha(self, img: dict, ctx: OpContext) -> str:
        if img.get("sha256"):
            return img["sha256"]
        path = ctx.image_path(img)
        return file_sha256(path) if path.is_file() else f"missing:{img.get('root')}/{img.get('path')}"

    def _image_embeddings(self, model: ClipModel, todo: list[Sample], shas: dict, ctx: OpContext):
        import numpy as np

        try:
            cache = ctx.item_cache(IMAGE_NS)
        except RuntimeError:  # a context without a persistent cache: remember for this call only
            cache = _CallCache()
        found: dict[str, Any] = {}
        need: dict[str, tuple[Sample, dict]] = {}
        for s in todo:
            for sha, img in zip(shas[id(s)], images_of(s), strict=True):
                hit = cache.get(f"{model.key}|{sha}") if sha not in found else None
                if hit is not None:
                    found[sha] = np.frombuffer(hit, dtype=np.float32)
                elif sha not in found:
                    need.setdefault(sha, (s, img))
        ctx.count("clip_image_cache_hits", len(found))
        order = list(need)
        bs = self.params["batch_size"]
        for i in range(0, len(order), bs):
            batch = [(sha, self._open(*need[sha], ctx)) for sha in order[i : i + bs]]
            batch = [(sha, im) for sha, im in batch if im is not None]
            if not batch:
                continue
            for (sha, _), row in zip(batch, model.encode_images([im for _, im in batch]), strict=False):
                found[sha] = row.astype(np.float32)
                cache.set(f"{model.key}|{sha}", found[sha].tobytes())
            ctx.count("clip_images_encoded", len(batch))
            ctx.emit({"event": "progress", "done": min(i + bs, len(order)), "total": len(order)})
        return found

    def _open(self, s: Sample, img: dict, ctx: OpContext) -> Any:
        from PIL import Image

        try:
            path = ctx.image_path(img)
            with Image.open(path) as im:
                return im.convert("RGB")
        except (OSError, KeyError) as e:
            ctx.count("missing_image")
            ctx.warn(f"clip_match: cannot read image of {s.get('id')}: {e}")
            return None

    def keep(self, stats: dict) -> str | None:
        if stats.get("missing_image"):
            return f"image unreadable: {stats['missing_image']}"
        lo = self.params.get("min_score")
        if lo is not None and stats["score"] is not None and stats["score"] < lo:
            return f"CLIP score {stats['score']:.4f} < min {lo}"
        return None

    def decide(self, stats: list[dict]) -> list[str | None]:
        out = [self.keep(s) for s in stats]
        frac = self.params.get("top_fraction")
        if frac is None:
            return out
        scored = sorted((i for i, s in enumerate(stats) if s.get("score") is not None and out[i] is None),
                        key=lambda i: (-stats[i]["score"], i))
        n_keep = math.ceil(frac * len(scored))
        cut = stats[scored[n_keep - 1]]["score"] if n_keep else None
        for i in scored[n_keep:]:
            out[i] = (f"CLIP score {stats[i]['score']:.4f} outside the top {frac:.0%} "
                      f"(cut-off {cut:.4f})")
        return out
