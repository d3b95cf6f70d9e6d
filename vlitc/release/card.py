"""The dataset card (``README.md`` of a release): Hugging Face front matter and Markdown."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import yaml


def _table(head: Sequence[str], rows: Sequence[Sequence]) -> str:
    def cell(v) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "n>1M"


def front_matter(s: Mapping) -> str:
    licences = sorted({src["license"].lower() for src in s["sources"]})
    data_files = [{"split": "validation" if o["split"] == "validation" else "train",
                   "path": o["path"]} for o in s["outputs"] if o["format"] in ("parquet", "llava")]
    meta = {"pretty_name": s["name"], "license": licences or ["unknown"],
            "size_categories": [_size_category(s["n_samples"])],
            "task_categories": ["visual-question-answering", "image-to-text"],
            "tags": ["vlit", "vlitc"]}
    if data_files:
        first = data_files[0]["path"].rsplit(".", 1)[-1]
        same = [d for d in data_files if d["path"].endswith("." + first)]
        meta["configs"] = [{"config_name": "default", "data_files": same}]
        parquet = [o for o in s["outputs"] if o["format"] == "parquet"]
        if first == "parquet" and parquet:  # the columns and their types, as the Hub reads them
            from vlitc.ops.exporters.parquet import release_features

            meta["dataset_info"] = {"features": release_features(parquet[0]["images"])}
    return "---\n" + yaml.safe_dump(meta, sort_keys=True, allow_unicode=True) + "---\n"


def pass_rate_tables(rates: Mapping, table) -> list[str]:
    """Pass-rate tables (per source, task, template) drawn with ``table(head, rows)``."""
    out = []
    for what in ("source", "task", "template"):
        rows = rates.get(what) or []
        if rows:
            out.append(table((what, "passed", "dropped", "pass rate"),
                             [(r["key"], r["passed"], r["dropped"], f"{r['rate']:.1%}")
                              for r in rows]) + "\n")
    return out


def render(s: Mapping) -> str:
    """The card for summary ``s`` (built by the ``release`` report op)."""
    c = s["counts"]
    parts = [
        front_matter(s),
        f"# {s['name']} {s['version']}\n",
        (s.get("description") or "").strip() + "\n" if s.get("description") else "",
        f"{s['n_samples']} samples over {len(c['task'])} tasks, built by vlitc with seed "
        f"{s['seed']}. See `report.html` for plots and a sample gallery, `indicators.json` for "
        f"the quality indicators and `vlitc.lock` for everything this release was built from.\n",
        "## Contents\n",
        _table(("task", "samples"), list(c["task"].items())) + "\n",
        _table(("task / source", "samples"), list(c["task_source"].items())) + "\n",
        _table(("split", "samples"), list(c["split"].items())) + "\n",
        "## Sources and licences\n",
        _table(("source", "type", "licence", "description"),
               [(x["name"], x["type"], x["license"], x["description"]) for x in s["sources"]])
        + "\n",
        "## Generation\n",
        (_table(("generator", "provider", "model", "tasks"),
                [(g["name"], g["provider"], g["model"], ", ".join(g["tasks"]))
                 for g in s["generators"]]) if s["generators"]
         else "No LLM generator: every sample comes from annotation adaption with templates.")
        + "\n" + "".join(f"- {g['name']}: {note}\n" for g in s["generators"]
                         for note in g.get("notes") or []),
        "## Filter funnel\n",
        _table(("step", "in", "out", "removed"),
               [(r["step"], r["n_in"], r["n_out"], r["n_in"] - r["n_out"]) for r in s["funnel"]])
        + "\n",
    ]
    if s["drop_reasons"]:
        rows = [(f, r, n) for f, reasons in s["drop_reasons"].items() for r, n in reasons]
        parts.append(_table(("filter", "most frequent drop reasons", "samples"), rows) + "\n")
    if s.get("failed"):
        parts += [
            "## Failed model calls\n",
            f"{sum(f['count'] for f in s['failed'])} item(s) are missing or kept without the "
            "model's answer because their model call failed (`on_error: skip`); the next build "
            "retries exactly these.\n",
            _table(("step", "item", "error"),
                   [(f["step"], i["item"], i["error"]) for f in s["failed"] for i in f["items"]])
            + "\n",
        ]
    parts.append("Every dropped sample is listed in `drops.jsonl` (id, filter, reason, stats, "
                 "provenance).\n")
    parts += pass_rate_tables(s.get("pass_rates") or {}, _table)
    if s.get("decontamination"):
        parts.append("## Decontamination\n")
        parts.append(_table(("evaluation set", "samples removed", "matched by", "examples"),
                            [(d["eval"], d["samples"],
                              ", ".join(f"{k}: {v}" for k, v in d["by"].items()),
                              "; ".join(d["examples"])) for d in s["decontamination"]]) + "\n")
    parts += [
        "## Quality indicators\n",
        "After the review paper's §4.2 and Table 4 (higher is better except balance variance).\n",
        _table(("indicator", "value"), s["indicator_rows"]) + "\n",
        "## Files\n",
        _table(("format", "path", "split", "images"),
               [(o["format"], o["path"], o["split"], o["images"]) for o in s["outputs"]]) + "\n",
        (s.get("image_note") or "") + "\n",
        "## Rebuild\n",
        "```sh\n" + s["rebuild"] + "\n```\n",
    ]
    return "\n".join(p for p in parts if p)
