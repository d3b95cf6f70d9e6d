"""Read an exported release back into samples (LLaVA JSON, messages JSONL, Parquet)."""

from __future__ import annotations

import json
from pathlib import Path

from vlitc.errors import InputError, Location
from vlitc.records import IMAGE_TOKEN, Sample, image_value
from vlitc.release import layout

ROLE = {"human": "user", "gpt": "assistant", "user": "user", "assistant": "assistant"}
#: in order of preference: Parquet carries task, source and split columns
DATA_SUFFIXES = (".parquet", ".json", ".jsonl")


def _image(ref: str | dict | list | None) -> dict | list | None:
    if isinstance(ref, list):
        return image_value([i for i in (_image(r) for r in ref) if isinstance(i, dict)])
    if isinstance(ref, dict):  # a datasets.Image value: {bytes, path}
        ref = ref.get("path")
    if not ref:
        return None
    root, _, rest = ref.partition("/")
    return {"root": root, "path": rest} if rest else {"root": "", "path": root}


def _from_llava(rec: dict) -> Sample:
    return {"id": str(rec.get("id")), "task": rec.get("task", ""), "source": rec.get("source", ""),
            "image": _image(rec["images"] if rec.get("images") else rec.get("image")),
            "turns": [{"role": ROLE.get(t.get("from"), t.get("from")), "content": t.get("value", "")}
                      for t in rec.get("conversations") or []],
            "meta": {"split": rec["split"]} if rec.get("split") else {}}


def _from_messages(rec: dict) -> Sample:
    images = rec.get("images") or []
    return {"id": str(rec.get("id")), "task": rec.get("task", ""), "source": rec.get("source", ""),
            "image": _image(list(images)),
            "turns": [{"role": m.get("role"), "content": _text(m.get("content", ""))}
                      for m in rec.get("messages") or []],
            "meta": {}}


def _text(content: str | list) -> str:
    """A message's content as text: content parts (``{"type": "image"}``, ``{"type": "text"}``)
    joined, each image part read back as the ``<image>`` placeholder."""
    if not isinstance(content, list):
        return content
    return "\n".join(IMAGE_TOKEN if p.get("type") == "image" else str(p.get("text", ""))
                     for p in content if isinstance(p, dict))


def read_file(path: str | Path) -> list[Sample]:
    """Samples of one exported file, recognised by its suffix."""
    p = Path(path)
    try:
        if p.suffix == ".parquet":
            import pyarrow.parquet as pq

            return [_from_llava(r) for r in pq.read_table(p).to_pylist()]
        if p.suffix == ".jsonl":
            with open(p, encoding="utf-8") as fh:
                return [_from_messages(json.loads(line)) for line in fh if line.strip()]
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"not valid JSON: {e.msg}", Location(str(p), e.lineno, e.colno)) from None
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror}", Location(str(p))) from None
    if not isinstance(data, list):
        raise InputError("expected a JSON array of samples (LLaVA format)", Location(str(p)))
    return [_from_llava(r) for r in data]


def data_files(release: str | Path) -> list[Path]:
    """The sample files of a release folder, one format only (Parquet, else LLaVA JSON, else
    JSONL), sorted so that shards come in order."""
    root = Path(release)
    found = [p for p in sorted(root.rglob("*")) if p.is_file() and p.suffix in DATA_SUFFIXES
             and not layout.not_data(p.relative_to(root).as_posix())
             and not layout.not_data(p.name)  # side files sit beside their data file
             and not p.name.startswith(".")]
    for suffix in DATA_SUFFIXES:
        chosen = [p for p in found if p.suffix == suffix]
        if chosen:
            return chosen
    return []


def read_release(path: str | Path) -> list[Sample]:
    """Every sample of a release folder (or of one exported file)."""
    p = Path(path)
    if p.is_file():
        return read_file(p)
    files = data_files(p)
    if not files:
        raise InputError("no exported samples (.json, .jsonl or .parquet) found", Location(str(p)),
                         hint="point at a release folder written by `vlitc build`")
    seen: set[str] = set()  # two exports of one format (sharegpt and llamafactory) share ids
    out = []
    for f in files:
        for s in read_file(f):
            if s["id"] not in seen:
                seen.add(s["id"])
                out.append(s)
    return out
