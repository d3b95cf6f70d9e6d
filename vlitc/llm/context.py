"""Render an image record as the text a language-only model sees (its "visual clues").

Templates are Jinja2 files: built-in ones live in ``prompt_templates/context/<name>.j2``; a
name ending in ``.j2`` is a file relative to the recipe. Templates receive the record's layers
plus helpers: ``objects`` (each with ``nbox``, its box normalised to 0-1 with three decimals and
printed as LLaVA prints it, e.g. ``[0.37, 0.584, 0.504, 0.709]``), ``counts`` (category -> count,
in order of first appearance) and ``focus`` (one marked object or region, for region prompts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlitc.errors import InputError, Location
from vlitc.paths import recipe_path
from vlitc.records import Record, one_image

#: where built-in templates and prompt packs live (package data first, then a source checkout)
_ROOTS = (
    Path(__file__).resolve().parents[1] / "data" / "prompt_templates",
    Path(__file__).resolve().parents[2] / "prompt_templates",
)
TEMPLATES_ROOT = next((p for p in _ROOTS if (p / "context").is_dir()), _ROOTS[-1])
CONTEXT_DIR = TEMPLATES_ROOT / "context"


def template_path(name: str, recipe_dir: Path | None = None) -> Path:
    """The file of context template ``name`` (built-in name, or a ``.j2`` path)."""
    if name.endswith(".j2"):
        path = recipe_path(recipe_dir or Path(), name)
    else:
        path = CONTEXT_DIR / f"{name}.j2"
    if path.is_dir():
        raise InputError(f"context template {name!r} is a folder, not a template file",
                         Location(str(path)))
    if not path.is_file():
        known = sorted(p.stem for p in CONTEXT_DIR.glob("*.j2"))
        raise InputError(
            f"context template {name!r} not found",
            Location(str(path)),
            hint=f"built-in templates: {', '.join(known)}; or give a .j2 file",
        )
    return path


def box_text(bbox: list[float], width: float | None, height: float | None) -> str:
    """A box as LLaVA writes it: normalised, three decimals, Python list syntax."""
    if not width or not height:
        raise ValueError("normalising a box needs the image width and height")
    vals = (bbox[0] / width, bbox[1] / height, bbox[2] / width, bbox[3] / height)
    return "[" + ", ".join(repr(float(round(v, 3))) for v in vals) + "]"


def check_template(name: str, recipe_dir: Path | None = None) -> None:
    """Compile a context template in the sandbox and check it reads only what a context template
    is given: a located error for an unreadable file, a syntax error, an unknown filter or test,
    or an undefined variable."""
    from vlitc.templating import ENV, file_template

    path = template_path(name, recipe_dir)
    reads = file_template(path)[1]
    unknown = sorted(set(reads) - PROVIDED - set(ENV.globals))
    if unknown:
        line = reads[unknown[0]]
        raise InputError(f"context template reads {unknown[0]!r}, which it is not given",
                         Location(str(path), line, 1 if line else 0),
                         hint="context templates receive: " + ", ".join(sorted(PROVIDED)))


#: what a context template receives (see :func:`variables`)
PROVIDED = frozenset({"record", "captions", "objects", "sentences", "counts", "qas", "ocr",
                      "regions", "focus", "width", "height"})


def variables(record: Record, focus: dict | None = None) -> dict[str, Any]:
    """What a context template can use."""
    img = one_image(record)
    w, h = img.get("width"), img.get("height")
    objects = []
    counts: dict[str, int] = {}
    for o in record.get("objects") or []:
        nbox = box_text(o["bbox"], w, h) if w and h else None
        objects.append({**o, "nbox": nbox})
        counts[o["category"]] = counts.get(o["category"], 0) + 1
    if focus is not None:
        focus = {**focus, "nbox": box_text(focus["bbox"], w, h) if w and h else None}
    return {
        "record": record,
        "captions": record.get("captions") or [],
        "objects": objects,
        "sentences": [_sentence(c) for c in record.get("captions") or [] if c.strip()],
        "counts": counts,
        "qas": record.get("qas") or [],
        "ocr": record.get("ocr") or [],
        "regions": record.get("regions") or [],
        "focus": focus,
        "width": w,
        "height": h,
    }


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    return text if text[-1] in ".!?" else text + "."


def render(
    record: Record,
    template: str = "llava",
    recipe_dir: Path | None = None,
    focus: dict | None = None,
) -> str:
    """The context text of ``record`` through ``template`` (stripped)."""
    from vlitc.templating import render_file

    path = template_path(template, recipe_dir)
    return render_file(path, variables(record, focus),
                       f"context template on record {record.get('id')!r}").strip()
