"""Report op ``release``: the dataset card, the visual report, the indicators and the lockfile."""

from __future__ import annotations

import importlib.util
import json

from vlitc.ops.base import OpContext, Report
from vlitc.ops.registry import register
from vlitc.records import images_of
from vlitc.release import layout

#: one line per dropped sample: id, filter, reason, that filter's stats, provenance
DROP_LOG = layout.register("drops.jsonl", "report",
                           "every dropped sample: id, filter, reason, stats, provenance")
FILES = (*layout.REPORT_FILES, DROP_LOG)


def image_set(samples: list[dict], ctx: OpContext) -> dict:
    """Count and hash of the release's images (their recorded sha256, else the file's)."""
    from vlitc.hashing import sha256_file
    from vlitc.release.lock import image_set_hash

    pairs = {}
    for img in (i for s in samples for i in images_of(s)):
        ref = f"{img.get('root')}/{img.get('path')}"
        if ref not in pairs:
            sha = img.get("sha256")
            if not sha:
                try:
                    path = ctx.image_path(img)
                    sha = sha256_file(path) if path.is_file() else "missing"
                except KeyError:
                    sha = "unknown-root"
            pairs[ref] = sha
    return {"count": len(pairs), "sha256": image_set_hash(pairs.items())}


@register("report", "release")
class ReleaseReport(Report):
    """Write README.md (dataset card), report.html, indicators.json, vlitc.lock and drops.jsonl
    (one line per dropped sample: id, filter, reason, that filter's stats, task, source,
    template, provenance), with pass rates per source, task and instruction template and what
    decontamination removed per evaluation set.

    Reads: the balanced samples, the dropped samples, the step summaries and the recipe. No
    wall-clock time goes into these files: they are byte-identical across rebuilds.
    """

    version = 1
    params_schema = {
        "type": "object",
        "properties": {
            "gallery": {"type": "integer", "minimum": 0, "default": 12},
            "thumb": {"type": "integer", "minimum": 32, "maximum": 1024, "default": 320},
            "indicators": {
                "type": "object",
                "properties": {
                    "response": {"type": "boolean", "default": True},
                    "eps": {"type": "number", "exclusiveMinimum": 0, "maximum": 2, "default": 0.2},
                    "min_samples": {"type": "integer", "minimum": 1, "default": 3},
                    "max_samples": {"type": "integer", "minimum": 1, "default": 2000},
                },
                "additionalProperties": False,
            },
            "rebuild": {"type": "string"},
        },
        "additionalProperties": False,
    }
    reads = ("balance", "filtered", "dropped", "steps", "recipe")
    writes = FILES

    def write(self, ctx: OpContext) -> list[str]:
        from vlitc.release import card, html
        from vlitc.release import summary as sm
        from vlitc.release.lock import dumps, make_lock, package_versions

        samples = sorted(ctx.input("balance"), key=lambda s: s["id"])
        dropped = sorted(ctx.input("dropped"), key=lambda s: s["id"])
        steps = list(ctx.input("steps"))
        summary = self.summarise(samples, dropped, steps, ctx)
        summary["pass_rates"] = sm.pass_rates(ctx.input("filtered"), dropped)
        summary["decontamination"] = sm.decontamination(dropped)
        lock = make_lock(ctx.recipe, steps, image_set(samples, ctx), package_versions())
        report = self.report_data(summary, samples, dropped, ctx)
        indicators = {k: summary[k] for k in ("name", "version", "seed", "n_samples", "counts",
                                              "indicators", "funnel", "drop_reasons",
                                              "pass_rates", "decontamination")}
        out = {
            layout.CARD: card.render(summary).encode(),
            layout.REPORT: html.render(report).encode(),
            layout.INDICATORS: (json.dumps(indicators, indent=2, sort_keys=True) + "\n").encode(),
            layout.LOCK: dumps(lock),
            DROP_LOG: "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n"
                              for r in sm.drop_log(dropped)).encode(),
        }
        if ctx.out_dir is None:
            raise RuntimeError("reports need ctx.out_dir")
        for name in FILES:  # into the step's private staging folder, taken whole or not at all
            (ctx.out_dir / name).write_bytes(out[name])
        return list(FILES)

    def summarise(self, samples, dropped, steps, ctx: OpContext) -> dict:
        from vlitc.quality.indicators import compute, filter_types_from_recipe
        from vlitc.release import summary as sm

        opts = self.params.get("indicators") or {}
        embed = None
        if importlib.util.find_spec("sentence_transformers") is not None:
            from vlitc.ops.filters.dedup import cached_embeddings

            def embed(texts: list[str]):  # cached per text, like every other embedding
                return cached_embeddings(texts, ctx, 64)

        ind = compute(samples, embed=embed, response=opts.get("response", True),
                      filter_types=filter_types_from_recipe(ctx.recipe),
                      eps=opts.get("eps", 0.2), min_samples=opts.get("min_samples", 3),
                      max_samples=opts.get("max_samples", 2000), seed=ctx.seed)
        r = ctx.recipe
        return {
            "name": r.get("name", ""), "version": r.get("version", ""), "seed": ctx.seed,
            "description": r.get("description", ""), "n_samples": len(samples),
            "counts": sm.counts(samples), "indicators": ind,
            "indicator_rows": sm.indicator_rows(ind), "funnel": sm.funnel(steps, dropped),
            "drop_reasons": sm.drop_reasons(dropped), "failed": sm.failed_items(steps),
            "sources": sm.sources(r),
            "generators": sm.generators(r), "outputs": sm.outputs(r),
            "rebuild": self.params.get("rebuild") or self.rebuild_command(ctx),
            "image_note": image_note(r),
            "llm": sm.llm_rows(r, steps), "parse_failures": sm.parse_failures(dropped),
            "task_funnel": sm.task_funnel(steps, samples, dropped),
            "task_drop_reasons": sm.task_drop_reasons(dropped),
        }

    def rebuild_command(self, ctx: OpContext) -> str:
        return ("# from the recipe this release was built from (its resolved form is in vlitc.lock),\n"
                f"# seed {ctx.seed}: no LLM call (the responses come from the release's "
                f"{layout.RESPONSES}),\n# and exit 2 with every difference if the bytes differ\n"
                "vlitc build <recipe.yaml> --frozen-from <release> --out rebuilt")

    def report_data(self, summary: dict, samples, dropped, ctx: OpContext) -> dict:
        from vlitc.release import gallery
        from vlitc.release import summary as sm
        from vlitc.release.svg import bars, histogram

        c = summary["counts"]
        plots = [bars("task mix (samples per task)", list(c["task"].items())),
                 bars("filter funnel (samples out)",
                      [(r["step"], r["n_out"]) for r in summary["funnel"]])]
        plots += [histogram(name, vals) for name, vals in sm.lengths(samples).items()]
        plots += [histogram(f"score: {name}", vals)
                  for name, vals in sm.score_values([*samples, *dropped]).items()]
        n, size = self.params["gallery"], self.params["thumb"]
        return {**summary, "plots": plots,
                "kept": [gallery.item(s, ctx.image_path, size)
                         for s in gallery.pick(samples, n, ctx.seed, "kept")],
                "dropped": [gallery.item(s, ctx.image_path, size)
                            for s in gallery.pick(dropped, n, ctx.seed, "dropped")]}


#: exports whose image paths are written for their trainer (vlitc.ops.exporters.trainers)
TRAINER_FORMATS = ("llamafactory", "messages", "internvl")


def _trainer_place(spec: dict) -> str:
    """Where the images of an embedding or trainer export are, in words."""
    mode, folder = spec.get("images", "reference"), spec.get("image_dir", "images")
    if mode == "embed":
        return "the pictures themselves, stored in the file as datasets.Image bytes."
    if mode == "reference":
        return ("absolute paths of the source images on the machine that built the release "
                "(export with `images: copy` to carry them).")
    if spec.get("format") == "internvl":
        return f"paths under the meta file's `root`, the release's `{folder}/` folder."
    return (f"paths relative to the data file's own folder, into the release's `{folder}/` "
            "folder, as the trainer resolves them.")


def image_note(recipe: dict) -> str:
    """Where the image paths in each exported file resolve: the recipe's image folders for an
    output that references them, the release's own image folder for one that copies or links
    the images into it."""
    from vlitc.release import summary as sm

    folders = sorted({str(src["images"]) for src in (recipe.get("sources") or {}).values()
                      if isinstance(src, dict) and isinstance(src.get("images"), str)})
    if not folders:
        return ""
    specs = [o for o in recipe.get("outputs") or [] if isinstance(o, dict) and "path" in o]
    shown = [o["path"] for o in sm.outputs(recipe)]
    by_place: dict[str, list[str]] = {}
    for spec, path in zip(specs, shown, strict=True):
        mode = spec.get("images", "reference")
        place = "" if mode == "reference" else f"{spec.get('image_dir', 'images')}\0{mode}"
        if mode == "embed" or spec.get("format") in TRAINER_FORMATS:
            place = "\0" + _trainer_place(spec)
        by_place.setdefault(place, []).append(f"`{path}`")
    if not specs:
        by_place[""] = []
    notes = []
    for place, paths in sorted(by_place.items()):
        files = f" in {', '.join(paths)}" if paths else ""
        if place.startswith("\0"):
            notes.append(f"Images{files}: {place[1:]}")
        elif not place:
            where = (f"the image folder `{folders[0]}`" if len(folders) == 1 else
                     "the common parent of the image folders " + ", ".join(f"`{f}`" for f in folders))
            them = "it" if len(folders) == 1 else "them"
            notes.append(f"Image paths{files} are relative to {where} (as the recipe names {them}).")
        else:
            folder, mode = place.split("\0")
            how = "copies" if mode == "copy" else "hard links (or copies)"
            notes.append(f"Image paths{files} are relative to the release's `{folder}/` folder, "
                         f"which holds {how} of the images they name.")
    return " ".join(notes)
