"""The self-contained ``report.html``: inline SVG plots and a gallery with inline images.

A small script marks the page ``data-rendered="ok"`` once every image has loaded and decoded
(``"failed:<n>"`` otherwise), so headless browsers and tests can check what a reader would see.
"""

from __future__ import annotations

import json
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


def _table(rows: Sequence[Sequence], head: Sequence[str]) -> str:
    h = "".join(f"<th>{escape(str(c))}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


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
    drop = ""
    if it.get("drop"):
        drop = (f'<div class="reason">dropped by {escape(str(it["drop"].get("filter")))}: '
                f'{escape(str(it["drop"].get("reason")))}</div>')
    stats = json.dumps(it["stats"], sort_keys=True, ensure_ascii=False, default=str)
    return (f'<div class="{cls}"><div><b>{escape(it["id"])}</b> · {escape(it["task"])} · '
            f'{escape(it["source"])}</div>{img}{turns}{drop}'
            f'<pre>{escape(stats[:800])}</pre></div>')


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
        "<h2>Kept samples</h2><div class=\"gallery\">",
        "".join(_card(i) for i in data["kept"]) or "<p>none</p>", "</div>",
        "<h2>Dropped samples</h2><div class=\"gallery\">",
        "".join(_card(i) for i in data["dropped"]) or "<p>none</p>", "</div>",
        f"<script>{SCRIPT}</script></body></html>\n",
    ]
    return "".join(parts)
