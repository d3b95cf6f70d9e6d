"""Report op ``release``: the dataset card, the visual report, the indicators and the lockfile."""

from __future__ import annotations

import importlib.util
import json
from typing import Any

from vlitc.ops.base import OpContext, Report
from vlitc.ops.registry import register
from vlitc.records import images_of
from vlitc.release import layout

#: one line per dropped sample: id, filter, reason, that filter's stats, provenance
DROP_LOG = layout.register("drops.jsonl", "report",
                           "every dropped sample: id, filter, reason, stats, provenance")
FILES = (*layout.REPORT_FILES, DROP_LOG)


class ImageSet:
    """The release's images as the samples stream past: each reference once, with its recorded
    sha256 (else the file's); :meth:`result` gives their count and hash."""

    def __init__(self, ctx: OpContext):
        self.ctx = ctx
        self.pairs: dict[str, str] = {}

    def add(self, s: dict) -> None:
        from vlitc.hashing import sha256_file

        for img in images_of(s):
            ref = f"{img.get('root')}/{img.get('path')}"
            if ref not in self.pairs:
                sha = img.get("sha256")
                if not sha:
                    try:
                        path = self.ctx.image_path(img)
                        sha = sha256_file(path) if path.is_file() else "missing"
                    except KeyError:
                        sha = "unknown-root"
                self.pairs[ref] = sha

    def result(self) -> dict:
        from vlitc.release.lock import image_set_hash

        return {"count": len(self.pairs), "sha256": image_set_hash(self.pairs.items())}


class Kept:
    """One pass over the released samples, folded into what the report shows of them: the
    tallies, the indicators, the image set and the gallery's seeded reservoir. Nothing holds
    the samples themselves (the gallery keeps its few)."""

    def __init__(self, ctx: OpContext, params: dict):
        from vlitc.quality.indicators import IndicatorScan, filter_types_from_recipe
        from vlitc.release import gallery
        from vlitc.release import summary as sm

        opts = params.get("indicators") or {}
        self.n = 0
        self.tally = sm.Tally()
        self.indicators = IndicatorScan(filter_types_from_recipe(ctx.recipe),
                                        max_samples=opts.get("max_samples", 2000), seed=ctx.seed)
        self.images = ImageSet(ctx)
        self.gallery = gallery.Reservoir(params["gallery"], ctx.seed, "kept")
        self._group = gallery.group_of

    def add(self, s: dict) -> None:
        self.n += 1
        self.tally.add(s)
        self.indicators.add(s)
        self.images.add(s)
        self.gallery.add(self._group(s), str(s["id"]), s)


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
        from vlitc.release import summary as sm
        from vlitc.release.gallery import Reservoir, group_of

        kept = Kept(ctx, self.params)
        for s in ctx.input("balance"):  # streamed: every figure of them is order-free
            kept.add(s)
        dropped = sm.Drops()
        gallery = Reservoir(self.params["gallery"], ctx.seed, "dropped")
        try:
            for d in ctx.input("dropped"):  # streamed too: the drop log is staged, then sorted
                dropped.add(d)
                kept.tally.add_scores(d)  # the score plots show the dropped samples' scores too
                gallery.add(group_of(d), str(d["id"]), d)
            self._write(ctx, kept, dropped, gallery)
        finally:
            dropped.close()
        return list(FILES)

    def _write(self, ctx: OpContext, kept: Kept, dropped: Any, dropped_gallery: Any) -> None:
        from vlitc.release import card, html
        from vlitc.release import summary as sm
        from vlitc.release.lock import dumps, make_lock, package_versions

        steps = list(ctx.input("steps"))
        summary = self.summarise(kept, dropped, steps, ctx)
        summary["pass_rates"] = sm.pass_rates(ctx.input("filtered"), dropped)
        summary["decontamination"] = dropped.decontamination()
        lock = make_lock(ctx.recipe, steps, kept.images.result(), package_versions())
        report = self.report_data(summary, kept, dropped_gallery, ctx)
        indicators = {k: summary[k] for k in ("name", "version", "seed", "n_samples", "counts",
                                              "indicators", "funnel", "drop_reasons",
                                              "pass_rates", "decontamination")}
        out = {
            layout.CARD: card.render(summary).encode(),
            layout.REPORT: html.render(report).encode(),
            layout.INDICATORS: (json.dumps(indicators, indent=2, sort_keys=True) + "\n").encode(),
            layout.LOCK: dumps(lock),
        }
        if ctx.out_dir is None:
            raise RuntimeError("reports need ctx.out_dir")
        for name, data in out.items():  # into the step's private staging folder, taken whole or not at all
            (ctx.out_dir / name).write_bytes(data)
        dropped.write_log(ctx.out_dir / DROP_LOG)

    def summarise(self, kept: Kept, dropped, steps, ctx: OpContext) -> dict:
        from vlitc.release import summary as sm

        opts = self.params.get("indicators") or {}
        embed = None
        if importlib.util.find_spec("sentence_transformers") is not None:
            from vlitc.ops.filters.dedup import cached_embeddings

            def embed(texts: list[str]):  # cached per text, like every other embedding
                return cached_embeddings(texts, ctx, 64)

        ind = kept.indicators.result(embed=embed, response=opts.get("response", True),
                                     eps=opts.get("eps", 0.2), min_samples=opts.get("min_samples", 3))
        counts = kept.tally.count_result()
        r = ctx.recipe
        return {
            "name": r.get("name", ""), "version": r.get("version", ""), "seed": ctx.seed,
            "description": r.get("description", ""), "n_samples": kept.n,
            "counts": counts, "indicators": ind,
            "indicator_rows": sm.indicator_rows(ind), "funnel": sm.funnel(steps, dropped),
            "drop_reasons": dropped.drop_reasons(), "failed": sm.failed_items(steps),
            "sources": sm.sources(r),
            "generators": sm.generators(r), "outputs": sm.outputs(r),
            "rebuild": self.params.get("rebuild") or self.rebuild_command(ctx),
            "image_note": image_note(r),
            "llm": sm.llm_rows(r, steps), "parse_failures": dropped.parse_failures(),
            "task_funnel": sm.task_funnel(steps, counts["task"], dropped),
            "task_drop_reasons": dropped.task_drop_reasons(),
        }

    def rebuild_command(self, ctx: OpContext) -> str:
        return ("# from the recipe this release was built from (its resolved form is in vlitc.lock),\n"
                f"# seed {ctx.seed}: no LLM call (the responses come from the release's "
                f"{layout.RESPONSES}),\n# and exit 2 with every difference if the bytes differ\n"
                "vlitc build <recipe.yaml> --frozen-from <release> --out rebuilt")

    def report_data(self, summary: dict, kept: Kept, dropped_gallery: Any, ctx: OpContext) -> dict:
        from vlitc.release import gallery
        from vlitc.release.svg import bars, histogram

        c = summary["counts"]
        plots = [bars("task mix (samples per task)", list(c["task"].items())),
                 bars("filter funnel (samples out)",
                      [(r["step"], r["n_out"]) for r in summary["funnel"]])]
        plots += [histogram(name, vals) for name, vals in kept.tally.lengths.items()]
        plots += [histogram(f"score: {name}", vals) for name, vals in kept.tally.score_result().items()]
        n, size = self.params["gallery"], self.params["thumb"]
        return {**summary, "plots": plots,
                "kept": [gallery.item(s, ctx.image_path, size) for s in gallery.taken(kept.gallery, n)],
                "dropped": [gallery.item(s, ctx.image_path, size) for s in gallery.taken(dropped_gallery, n)]}


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
