"""The self-contained ``report.html``: inline SVG plots and a gallery with inline images.

A small script marks the page ``data-rendered="ok"`` once every image has loaded and decoded
(``"failed:<n>"`` otherwise), so headless browsers and tests can check what a reader would see.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{margin-bottom:0}.sub{color:#666;margin-top:4px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
.plots{display:flex;flex-wrap:wrap;gap:12px}.plot{border:1px solid #eee}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:14px}
.card{border:1px solid #ddd;border-radius:6px;padding:8px;font-size:13px}
.card.dropped{border-color:#e15759}.frame{position:relative;display:inline-block;line-height:0}
.frame img{max-width:320px;display:block}.frame svg{position:absolute;left:0;top:0;width:100%;height:100%}
.turn{margin:4px 0;white-space:pre-wrap}.role{font-weight:bold;color:#4e79a7}
.reason{color:#e15759;font-weight:bold}pre{white-space:pre-wrap;font-size:11px;background:#f7f7f7;padding:4px}
"""

SCRIPT = """
(function(){
  function done(){
    var imgs=Array.prototype.slice.call(document.images);
    var bad=imgs.filter(function(i){return !(i.complete&&i.naturalWidth>0);}).length;
    document.body.setAttribute('data-images',String(imgs.length));
    document.body.setAttribute('data-plots',String(document.querySelectorAll('svg.plot').length));
    document.body.setAttribute('data-rendered',bad?('failed:'+bad):'ok');
  }
  var imgs=Array.prototype.slice.call(document.images);
  Promise.all(imgs.map(function(i){return i.decode?i.decode().catch(function(){}):null;}))
    .then(done);
})();
"""


def _table(rows: Sequence[Sequence], head: Sequence[str], cls: str = "") -> str:
    h = "".join(f"<th>{escape(str(c))}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    attr = f' class="{cls}"' if cls else ""
    return f"<table{attr}><tr>{h}</tr>{body}</table>"


def _cached(row: Mapping) -> str:
    return f'{row.get("cache_read_tokens", 0):,} / {row.get("cache_write_tokens", 0):,}'


def _repair_failure(f: Mapping) -> str:
    if "repair_error" not in f:
        return ""
    return (f'repair: <span class="reason">{escape(f["repair_error"])}</span>'
            f'<pre>{escape(f["repair_raw"][:1500])}</pre>')


def _llm_section(data: Mapping) -> str:
    """The generators behind the LLM-written tasks, judges, complexity votes and expanded
    pools, and what their data cost."""
    rows = data.get("llm") or []
    if not rows:
        return ""

    def usd(v) -> str:
        return "unpriced" if v is None else f"${v:.4f}"

    table = _table([(r["task"], r["generator"], f'{r["provider"]} / {r["model"]}', r["pack"],
                     "default" if r["temperature"] is None else r["temperature"], r["n"],
                     r["requests"], f'{r["prompt_tokens"]:,}', _cached(r),
                     f'{r["completion_tokens"]:,}', usd(r["usd"]), usd(r.get("usd_saved")),
                     f'{r["repaired"]} of {r["repairs"]}', r["parse_failures"],
                     r["failed"]) for r in rows],
                   ("step", "generator", "provider / model", "prompt pack", "temperature", "n",
                    "requests", "prompt tokens", "of them cached (read / written)",
                    "completion tokens", "cost", "saved by prompt caching", "repaired",
                    "parse failures", "failed"), "llm")
    parts = ["<h2>LLM generation</h2>", table,
             "<p class=\"sub\">Requests, tokens and cost are those of the responses the data "
             "holds (cached or not); this build's own calls and cache hits are in "
             "manifest.json.</p>"]
    failures = data.get("parse_failures") or []
    if failures:
        parts.append("<h3>Parse failures</h3>")
        parts += [f'<div class="failure"><b>{escape(f["id"])}</b>: '
                  f'<span class="reason">{escape(f["error"])}</span>'
                  f'<pre>{escape(f["raw"][:1500])}</pre>{_repair_failure(f)}</div>'
                  for f in failures]
    return "".join(parts)


def _task_funnel(data: Mapping) -> str:
    rows = data.get("task_funnel") or []
    if not rows:
        return ""
    filters = sorted({f for r in rows for f in r["dropped"]})
    body = [(r["task"], r["made"], *[r["dropped"].get(f, 0) for f in filters], r["balanced_out"],
             r["released"]) for r in rows]
    head = ("task", "made", *[f"dropped by {f}" for f in filters], "cut by balance", "released")
    out = ["<h2>Per-task funnel</h2>", _table(body, head, "task-funnel")]
    reasons = data.get("task_drop_reasons") or []
    if reasons:
        out += ["<h3>Drop reasons per task</h3>",
                _table(reasons, ("task", "filter", "reason", "samples"), "drop-reasons")]
    return "".join(out)


def _boxes(it: Mapping) -> str:
    if not it.get("boxes"):
        return ""
    w, h = it["width"], it["height"]
    parts = [f'<svg viewBox="0 0 {w} {h}" preserveAspectRatio="none" class="boxes">']
    for b in it["boxes"]:
        x1, y1, x2, y2 = b["bbox"]
        colour = "#f28e2b" if b["referred"] else "#59a14f"
        parts.append(f'<rect x="{x1:.1f}" y="{y1:.1f}" width="{x2 - x1:.1f}" height="{y2 - y1:.1f}" '
                     f'fill="none" stroke="{colour}" stroke-width="{max(w, h) / 160:.1f}">'
                     f'<title>{escape(b["label"])}</title></rect>')
    return "".join(parts) + "</svg>"


def _card(it: Mapping) -> str:
    cls = "card dropped" if it.get("drop") else "card"
    img = ""
    if it.get("image"):
        img = (f'<div class="frame"><img src="{it["image"]}" alt="{escape(it["id"])}">'
               f"{_boxes(it)}</div>")
    turns = "".join(f'<div class="turn"><span class="role">{escape(t["role"])}:</span> '
                    f'{escape(t["content"])}</div>' for t in it["turns"])
    if it.get("draft"):
        turns = ('<details><summary>draft (before the rewrite)</summary>' + "".join(
            f'<div class="turn"><span class="role">{escape(t["role"])}:</span> '
            f'{escape(t["content"])}</div>' for t in it["draft"]) + "</details>" + turns)
    drop = ""
    if it.get("drop"):
        drop = (f'<div class="reason">dropped by {escape(str(it["drop"].get("filter")))}: '
                f'{escape(str(it["drop"].get("reason")))}</div>')
    from vlitc.release.summary import stat_rows

    rows = stat_rows(it["stats"])
    stats = _table(rows, ("filter", "stat", "value"), "stats") if rows else ""
    context = ""
    if it.get("context"):
        context = (f'<details class="context" open><summary>context the generator saw</summary>'
                   f'<pre>{escape(it["context"][:2000])}</pre></details>')
    return (f'<div class="{cls}"><div><b>{escape(it["id"])}</b> · {escape(it["task"])} · '
            f'{escape(it["source"])}</div>{img}{context}{turns}{drop}{stats}</div>')


def render(data: Mapping) -> str:
    """The report page for ``data`` (name, version, counts, indicators, funnel, plots, gallery)."""
    title = f"{data['name']} {data['version']}"
    ind_rows = [(k, v) for k, v in data["indicator_rows"]]
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>{escape(title)} · vlitc report</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1><p class=\"sub\">{data['n_samples']} samples · "
        f"{len(data['counts']['task'])} tasks · seed {escape(str(data['seed']))}</p>",
        "<h2>Quality indicators</h2>", _table(ind_rows, ("indicator", "value")),
        "<h2>Plots</h2><div class=\"plots\">", "".join(data["plots"]), "</div>",
        "<h2>Filter funnel</h2>",
        _table([(r["step"], r["n_in"], r["n_out"], r["n_in"] - r["n_out"]) for r in data["funnel"]],
               ("step", "in", "out", "removed")),
        _task_funnel(data), _llm_section(data),
        "<p>Every dropped sample: <a href=\"drops.jsonl\">drops.jsonl</a>.</p>",
        "<h2>Pass rates</h2>",
        "".join(_table([(r["key"], r["passed"], r["dropped"], f"{r['rate']:.1%}") for r in rows],
                       (what, "passed", "dropped", "pass rate"))
                for what, rows in sorted((data.get("pass_rates") or {}).items()) if rows),
        "".join(["<h2>Decontamination</h2>", _table(
            [(d["eval"], d["samples"], ", ".join(f"{k}: {v}" for k, v in d["by"].items()),
              "; ".join(d["examples"])) for d in data["decontamination"]],
            ("evaluation set", "samples removed", "matched by", "examples"))])
        if data.get("decontamination") else "",
        "<h2>Kept samples</h2><div class=\"gallery\">",
        "".join(_card(i) for i in data["kept"]) or "<p>none</p>", "</div>",
        "<h2>Dropped samples</h2><div class=\"gallery\">",
        "".join(_card(i) for i in data["dropped"]) or "<p>none</p>", "</div>",
        f"<script>{SCRIPT}</script></body></html>\n",
    ]
    return "".join(parts)


DIFF_STYLE = """
.pair{display:grid;grid-template-columns:1fr 1fr;gap:10px;margin:10px 0}
.side h4{margin:2px 0;color:#666}.added{border-color:#59a14f}.removed{border-color:#e15759}
"""


def diff_page(data: Mapping) -> str:
    """The audit page of ``vlitc diff --html``: the text summary, then the added, removed and
    changed samples (old beside new) as gallery cards with their pictures."""
    def section(title: str, cards: str, more: int) -> str:
        tail = f"<p class=\"sub\">... and {more} more</p>" if more else ""
        return f"<h2>{escape(title)}</h2>" + (cards or "<p>none</p>") + tail

    def tagged(it: Mapping, cls: str) -> str:
        return _card(it).replace('<div class="card', f'<div class="{cls} card', 1)

    changed = "".join(
        f'<div class="pair"><div class="side"><h4>old</h4>{_card(o)}</div>'
        f'<div class="side"><h4>new</h4>{_card(n)}</div></div>' for o, n in data["changed"])
    more = data["more"]
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>vlitc diff · {escape(data['old'])} → {escape(data['new'])}</title>",
        f"<style>{STYLE}{DIFF_STYLE}</style></head><body>",
        f"<h1>diff</h1><p class=\"sub\">{escape(data['old'])} → {escape(data['new'])}</p>",
        f"<pre>{escape(data['summary'])}</pre>",
        section("Added samples", "<div class=\"gallery\">" + "".join(
            tagged(i, "added") for i in data["added"]) + "</div>" if data["added"] else "",
            more["added"]),
        section("Removed samples", "<div class=\"gallery\">" + "".join(
            tagged(i, "removed") for i in data["removed"]) + "</div>" if data["removed"] else "",
            more["removed"]),
        section("Changed samples", changed, more["changed"]),
        f"<script>{SCRIPT}</script></body></html>\n",
    ]
    return "".join(parts)
