"""Facts about a build that the card, report and indicators file share (all pure functions)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from vlitc.quality.indicators import TOO_FEW
from vlitc.records import Sample, assistant_text, user_text


class Tally:
    """What the card and report count over the released samples, folded one sample at a time
    (memory grows with distinct values, not with samples): the samples per task, source and
    split, the words per instruction and response, and the numeric filter stats by
    ``label.key``."""

    def __init__(self) -> None:
        self.counts: dict[str, Counter[str]] = {k: Counter() for k in ("task", "source", "task_source", "split")}
        self.lengths: dict[str, Counter[float]] = {"instruction words": Counter(), "response words": Counter()}
        self.scores: dict[str, Counter[float]] = defaultdict(Counter)

    def add(self, s: Sample) -> None:
        c = self.counts
        task, source = s.get("task", ""), s.get("source", "")
        c["task"][task] += 1
        c["source"][source] += 1
        c["task_source"][f"{task}/{source}"] += 1
        c["split"][(s.get("meta") or {}).get("split", "train")] += 1
        self.lengths["instruction words"][float(len(user_text(s).split()))] += 1
        self.lengths["response words"][float(len(assistant_text(s).split()))] += 1
        self.add_scores(s)

    def add_scores(self, s: Sample) -> None:
        for label, st in sorted(((s.get("meta") or {}).get("stats") or {}).items()):
            if not isinstance(st, dict):
                continue
            for key, v in sorted(st.items()):
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.scores[f"{label}.{key}"][float(v)] += 1

    def count_result(self) -> dict[str, dict[str, int]]:
        return {k: dict(sorted(v.items())) for k, v in self.counts.items()}

    def score_result(self, limit: int = 6) -> dict[str, Counter[float]]:
        return {k: self.scores[k] for k in sorted(self.scores)[:limit]}


def counts(samples: Iterable[Sample]) -> dict[str, dict[str, int]]:
    """Samples per task, per source, per task and source, and per split."""
    tally = Tally()
    for s in samples:
        tally.add(s)
    return tally.count_result()


def funnel(steps: Iterable[Mapping], dropped: Drops) -> list[dict]:
    """Samples in and out of merge, every filter and balance, in build order. Without step
    summaries, the drops per filter are counted from the dropped samples."""
    rows = [{"step": s["id"], "n_in": int(s.get("n_in") or 0), "n_out": int(s.get("n_out") or 0)}
            for s in steps if s.get("kind") in ("merge", "filter", "balance")
            or str(s.get("id", "")).split(":")[0] in ("merge", "filter", "balance")]
    if rows:
        return rows
    return [{"step": f"filter:{k}", "n_in": v, "n_out": 0} for k, v in sorted(dropped.per_filter.items())]


def failed_items(steps: Iterable[Mapping]) -> list[dict]:
    """Per step, the items whose model call finally failed under ``on_error: skip`` (left out,
    or kept without the model's answer): ``{"step", "count", "items": [{"item", "error"}]}``."""
    out = []
    for s in steps:
        count = int((s.get("counters") or {}).get("llm_failed") or 0)
        if count:
            out.append({"step": s["id"], "count": count,
                        "items": list((s.get("notes") or {}).get("llm_failed") or [])})
    return out


def sources(recipe: Mapping) -> list[dict]:
    """Each source with its type, licence (``license`` param; a join carries its inputs'
    licences; else "unknown") and description."""
    specs = {n: s if isinstance(s, Mapping) else {} for n, s in (recipe.get("sources") or {}).items()}

    def licence(name: str, seen: frozenset[str] = frozenset()) -> str:
        spec = specs.get(name, {})
        if spec.get("license"):
            return str(spec["license"])
        if spec.get("type") == "join" and name not in seen:
            parts = sorted({licence(n, seen | {name}) for n in spec.get("sources") or []})
            return " + ".join(parts) if parts else "unknown"
        return "unknown"

    return [{"name": name, "type": spec.get("type", ""), "license": licence(name),
             "description": spec.get("description", "")} for name, spec in sorted(specs.items())]


def generators(recipe: Mapping) -> list[dict]:
    """Each generator with its provider and model, and the tasks that use it."""
    used: dict[str, list[str]] = defaultdict(list)
    for t, spec in sorted((recipe.get("tasks") or {}).items()):
        if isinstance(spec, Mapping) and isinstance(spec.get("generator"), str):
            used[spec["generator"]].append(t)
    samples: dict[str, int] = defaultdict(lambda: 1)
    for spec in (recipe.get("tasks") or {}).values():
        if isinstance(spec, Mapping) and isinstance(spec.get("generator"), str):
            samples[spec["generator"]] = max(samples[spec["generator"]], int(spec.get("n") or 1))
    for spec in recipe.get("filters") or []:
        if isinstance(spec, Mapping) and isinstance(spec.get("generator"), str):
            samples[spec["generator"]] = max(samples[spec["generator"]], int(spec.get("votes") or 1))
    out = []
    for n, g in sorted((recipe.get("generators") or {}).items()):
        if not isinstance(g, Mapping):
            continue
        notes = []
        if g.get("vision"):
            notes.append("reads images (prepared as `image` says, else to the provider's limits)")
        if g.get("provider") == "anthropic" and samples[n] > 1:
            notes.append(f"no `n` in the Messages API: {samples[n]} samples cost {samples[n]} calls")
        out.append({"name": n, "provider": g.get("provider", ""), "model": g.get("model", ""),
                    "tasks": used.get(n, []), "notes": notes})
    return out


def outputs(recipe: Mapping) -> list[dict]:
    """The exported files as the recipe declares them (format, path or shard pattern, split)."""
    out = []
    for o in recipe.get("outputs") or []:
        if not isinstance(o, Mapping) or "path" not in o:
            continue
        path = str(o["path"])
        if o.get("shard_size"):
            stem, dot, suffix = path.rpartition(".")
            path = f"{stem}-*.{suffix}" if dot else f"{path}-*"
        out.append({"format": o.get("format", ""), "path": path, "split": o.get("split", "all"),
                    "images": o.get("images", "reference")})
    return out


def indicator_rows(ind: Mapping) -> list[tuple[str, str]]:
    """The indicators as ``(name, formatted value)`` rows for the card and the report."""
    def f(v, digits=3, none="n/a"):
        return none if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))

    rd = ind.get("response_diversity")
    bal, q = ind["balance"], ind["quality"]
    if rd is None:
        response = "not computed"
    elif rd.get("skipped"):
        response = f"skipped: {rd['skipped']}"
    elif rd.get("too_few") or rd.get("value") is None:
        response = (f"{TOO_FEW} ({rd.get('n', 0)} responses; DBSCAN needs "
                    f"{rd.get('min_samples')})")
    else:
        response = (f"{rd['value']:.3f} ({rd['clusters']} clusters, {rd['noise']} noise of "
                    f"{rd['n']})")
    few = TOO_FEW if not ind["n_samples"] else "n/a"
    return [
        ("samples", f(ind["n_samples"])),
        ("task diversity (task types)", f(ind["task_diversity"])),
        ("instruction diversity (mean clusters per task)",
         f(ind["instruction_diversity"]["mean"], none=few)),
        ("response diversity (log DBSCAN clusters)", response),
        ("object/granularity complexity (objects referred to)",
         f(ind["object_complexity"]["mean_referred"])),
        ("instruction complexity (content elements)",
         f(ind["instruction_complexity"]["mean_elements"], none=few)),
        ("instruction complexity (LLM score 1-10)", f(ind["instruction_complexity"]["llm_score"])),
        ("balance: variance of task counts", f(bal["variance"])),
        ("balance: normalised entropy", f(bal["normalised_entropy"])),
        ("mean matching degree", f(q["matching_degree"])),
        ("correctness rate", f(q["correctness_rate"])),
        ("hallucination rate", f(q["hallucination_rate"])),
    ]


#: the task kinds whose samples an LLM wrote
LLM_TASKS = ("generate", "rewrite")


def llm_rows(recipe: Mapping, steps: Sequence[Mapping]) -> list[dict]:
    """One row per step that calls a model (generating task, judge or complexity filter, pool
    expansion): its generator (provider, model), prompt pack, temperature and n (a filter's
    votes), and what its data cost, from the usage each response recorded (so a rebuild from
    the cache reports the same): requests, tokens (prompt tokens read from and written to the
    provider's prompt cache among them), dollars at the generator's prices and what prompt
    caching saved, repairs, parse failures and failed items. This build's own fresh calls and
    cache hits are in ``manifest.json``: they differ between a build and its rebuild, and a
    frozen rebuild must give the same report bytes."""
    from vlitc.llm.cost import cost, generator_price, saved

    gens = recipe.get("generators") or {}
    by_id = {s.get("id"): s for s in steps}
    rows = []
    for name, spec, sid, n in _model_steps(recipe):
        gen = gens.get(spec.get("generator"), {}) if isinstance(gens, Mapping) else {}
        c = (by_id.get(sid) or {}).get("counters") or {}
        p_tok, c_tok = int(c.get("prompt_tokens", 0)), int(c.get("completion_tokens", 0))
        read, write = int(c.get("cache_read_tokens", 0)), int(c.get("cache_write_tokens", 0))
        price = generator_price(gen)
        temperature = spec.get("temperature", gen.get("temperature"))
        rows.append({
            "task": name, "kind": spec.get("kind") or spec.get("type"),
            "generator": spec.get("generator", ""),
            "provider": gen.get("provider", ""), "model": gen.get("model", ""),
            "pack": spec.get("prompt", "") if sid.startswith("task:") else "",
            "temperature": temperature, "n": n,
            "requests": int(c.get("llm_requests", 0)), "prompt_tokens": p_tok,
            "completion_tokens": c_tok, "cache_read_tokens": read, "cache_write_tokens": write,
            "usd": round(cost(price, p_tok, c_tok, read, write), 6) if price is not None else None,
            "usd_saved": round(saved(price, read, write), 6) if price is not None else None,
            "repairs": int(c.get("repair_requests", 0)), "repaired": int(c.get("repaired", 0)),
            "parse_failures": int(c.get("parse_error", 0)), "failed": int(c.get("llm_failed", 0)),
        })
    return rows


def _model_steps(recipe: Mapping) -> list[tuple[str, Mapping, str, int]]:
    """Every step that calls a model, as ``(name shown, spec, step id, samples per item)``: the
    generating tasks, then the filters that ask one (judge and complexity votes), then the pools
    an LLM expands."""
    out: list[tuple[str, Mapping, str, int]] = []
    tasks = recipe.get("tasks") or {}
    for name, spec in sorted(tasks.items()) if isinstance(tasks, Mapping) else []:
        if isinstance(spec, Mapping) and spec.get("kind") in LLM_TASKS:
            out.append((str(name), spec, f"task:{name}", int(spec.get("n", 1))))
    filters = recipe.get("filters") or []
    for spec in filters if isinstance(filters, list) else []:
        if isinstance(spec, Mapping) and spec.get("generator"):
            label = spec.get("name") or spec.get("type")
            out.append((f"filter {label}", spec, f"measure:{label}", int(spec.get("votes", 1))))
    pools = recipe.get("pools") or {}
    for name, spec in sorted(pools.items()) if isinstance(pools, Mapping) else []:
        if isinstance(spec, Mapping) and spec.get("generator"):
            out.append((f"pool {name}", spec, f"pool:{name}", 1))
    return out


def task_funnel(steps: Sequence[Mapping], released: Mapping[str, int], dropped: Drops) -> list[dict]:
    """Per task: samples the task made, dropped by each filter, cut by the balance, released
    (``released``: samples per task, :func:`counts`' ``task``)."""
    made = {str(s.get("id", ""))[5:]: int(s.get("n_out") or 0) for s in steps
            if str(s.get("id", "")).startswith("task:")}
    by_filter = dropped.task_filter
    rows = []
    for task in sorted(set(made) | set(released)):
        n_made = made.get(task, released.get(task, 0))
        drops = dict(sorted(by_filter.get(task, Counter()).items()))
        rows.append({"task": task, "made": n_made, "dropped": drops,
                     "balanced_out": max(0, n_made - sum(drops.values()) - released.get(task, 0)),
                     "released": released.get(task, 0)})
    return rows


def stat_rows(stats: Mapping) -> list[tuple[str, str, str]]:
    """A sample's filter stats as ``(filter, stat, value)`` rows (lists shortened)."""
    rows = []
    for label, st in sorted(stats.items()):
        items = st.items() if isinstance(st, Mapping) else [("", st)]
        for key, v in sorted(items, key=lambda kv: str(kv[0])):
            if isinstance(v, float):
                text = f"{v:.4g}"
            elif isinstance(v, (list, tuple)):
                text = ", ".join(map(str, v[:8])) + (f" ... ({len(v)})" if len(v) > 8 else "")
            else:
                text = str(v)
            rows.append((str(label), str(key), text[:200]))
    return rows
def template_key(s: Sample) -> str:
    """The instruction template a sample was written from (``pool#index``), or ``(none)`` for
    imported conversations and generated text."""
    t = (s.get("meta") or {}).get("template")
    if isinstance(t, Mapping):
        return f"{t.get('pool') or 'inline'}#{t.get('index')}"
    return "(none)"


def pass_rates(passed: Iterable[Sample], dropped: Drops) -> dict[str, list[dict]]:
    """Share of samples that passed every filter, per source, per task and per instruction
    template: ``{"source": [{"key", "passed", "dropped", "rate"}, ...], ...}``."""
    tallies: dict[str, dict[str, list[int]]] = {k: defaultdict(lambda: [0, 0]) for k in PASS_KEYS}
    for s in passed:
        for name, key in PASS_KEYS.items():
            tallies[name][str(key(s))][0] += 1
    for name, counts in dropped.pass_keys.items():
        for k, n in counts.items():
            tallies[name][k][1] += n
    return {name: [{"key": k, "passed": p, "dropped": d, "rate": round(p / (p + d), 4)}
                   for k, (p, d) in sorted(t.items())] for name, t in tallies.items()}


#: what a pass rate is given per: the sample's source, task and instruction template
PASS_KEYS: dict[str, Callable[[Sample], str]] = {
    "source": lambda s: s.get("source", ""), "task": lambda s: s.get("task", ""), "template": template_key}


class Ranked:
    """A tally whose equal counts are ordered by where each key first came in id order (as
    :meth:`collections.Counter.most_common` orders them over samples sorted by id), however
    the samples arrive."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.first: dict[str, tuple[str, int]] = {}

    def add(self, key: str, at: tuple[str, int]) -> None:
        self.counts[key] += 1
        if key not in self.first or at < self.first[key]:
            self.first[key] = at

    def most_common(self, n: int) -> list[tuple[str, int]]:
        order = sorted(self.counts, key=lambda k: (-self.counts[k], self.first[k]))
        return [(k, self.counts[k]) for k in order[:n]]


class Lowest:
    """The ``n`` items of the lowest keys seen (the first ``n`` in id order), kept as they come."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.items: list[tuple[tuple[str, int], Any]] = []

    def add(self, at: tuple[str, int], item: Any) -> None:
        self.items.append((at, item))
        if len(self.items) > 4 * self.n + 16:
            self._trim()

    def _trim(self) -> None:
        self.items.sort(key=lambda e: e[0])
        del self.items[self.n:]

    def result(self) -> list[Any]:
        self._trim()
        return [item for _at, item in self.items]


class Drops:
    """The dropped samples, folded one at a time into what the card, the report and
    ``drops.jsonl`` say of them: counts and drop reasons per filter and task, the first parse
    failures and decontamination examples in id order, the dropped side of the pass rates,
    and the drop log's lines, staged in a temporary file and written out in id order (the
    order is kept as ``(id, arrival)``, as a stable sort by id gives). Only the log's line
    positions and the few examples are held."""

    def __init__(self, parse_limit: int = 20, examples: int = 5) -> None:
        import tempfile

        self.n = 0
        self.per_filter: Counter[str] = Counter()
        self.reasons: dict[str, Ranked] = defaultdict(Ranked)
        self.task_filter: dict[str, Counter[str]] = defaultdict(Counter)
        self.task_reasons: dict[tuple[str, str], Ranked] = defaultdict(Ranked)
        self.pass_keys: dict[str, Counter[str]] = {k: Counter() for k in PASS_KEYS}
        self.parse = Lowest(parse_limit)
        self.examples = examples
        self.decon: dict[str, dict] = {}
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in write_log)
        self._where: list[tuple[str, int, int, int]] = []  # (id, arrival, offset, length)
        self._offset = 0

    def add(self, d: Sample) -> None:
        at = (str(d.get("id")), self.n)
        self.n += 1
        meta = d.get("meta") or {}
        drop = meta.get("drop") or {}
        f, reason, task = str(drop.get("filter", "?")), str(drop.get("reason", "")), d.get("task", "")
        self.per_filter[drop.get("filter", "?")] += 1
        self.reasons[f].add(reason, at)
        self.task_filter[task][f] += 1
        self.task_reasons[(task, f)].add(reason, at)
        for name, key in PASS_KEYS.items():
            self.pass_keys[name][str(key(d))] += 1
        if meta.get("parse_error"):
            self.parse.add(at, _parse_row(d))
        self._contaminated(d, at)
        line = (json.dumps(drop_row(d), sort_keys=True, ensure_ascii=False) + "\n").encode()
        self._log.write(line)
        self._where.append((*at, self._offset, len(line)))
        self._offset += len(line)

    def _contaminated(self, d: Sample, at: tuple[str, int]) -> None:
        meta = d.get("meta") or {}
        label = (meta.get("drop") or {}).get("filter")
        st = (meta.get("stats") or {}).get(label) if label else None
        if not isinstance(st, Mapping) or not st.get("contaminated"):
            return
        for ev in sorted({str(f.get("eval")) for f in st["contaminated"]}):
            row = self.decon.setdefault(ev, {"eval": ev, "samples": 0, "by": Counter(),
                                             "examples": Lowest(self.examples)})
            row["samples"] += 1
            hits = [f for f in st["contaminated"] if str(f.get("eval")) == ev]
            row["by"].update(str(f.get("by")) for f in hits)
            row["examples"].add(at, f"{d['id']} ({hits[0].get('by')}: {hits[0].get('match')})")

    def drop_reasons(self, top: int = 5) -> dict[str, list[tuple[str, int]]]:
        """The most frequent drop reasons per filter."""
        return {f: c.most_common(top) for f, c in sorted(self.reasons.items())}

    def task_drop_reasons(self, top: int = 3) -> list[tuple[str, str, str, int]]:
        """``(task, filter, reason, samples)``: the most frequent drop reasons of each task."""
        return [(task, f, reason, n) for (task, f), c in sorted(self.task_reasons.items())
                for reason, n in c.most_common(top)]

    def parse_failures(self) -> list[dict]:
        """The responses no parser could read (kept with their raw text and the parser's
        reason, and those of the repair that failed too), the first in id order."""
        return self.parse.result()

    def decontamination(self) -> list[dict]:
        """What decontamination removed, per evaluation set: how many samples, matched how,
        and a few ids with what they matched (from the ``contaminated`` stats of the filter
        that dropped them)."""
        return [{**r, "by": dict(sorted(r["by"].items())), "examples": r["examples"].result()}
                for _, r in sorted(self.decon.items())]

    def write_log(self, path: Any) -> None:
        """``drops.jsonl``: one line per dropped sample, in id order."""
        self._where.sort()
        log = self._log
        try:
            log.flush()
            with open(path, "wb") as out:
                for _id, _n, offset, length in self._where:
                    log.seek(offset)
                    out.write(log.read(length))
        finally:
            log.close()

    def close(self) -> None:
        self._log.close()


def _parse_row(d: Sample) -> dict:
    meta = d.get("meta") or {}
    row = {"id": d["id"], "task": d.get("task", ""), "error": meta["parse_error"], "raw": str(meta.get("raw", ""))}
    repair = meta.get("repair") or {}
    if repair.get("failed"):  # the follow-up did not parse either: its own reason
        row["repair_error"] = str(repair.get("error", ""))
        row["repair_raw"] = str(repair.get("raw", ""))
    return row


def drop_row(d: Sample) -> dict:
    """A dropped sample's row in ``drops.jsonl``: id, the filter and its reason, that filter's
    stats, and where the sample came from (task, source, template, record, provenance)."""
    meta = d.get("meta") or {}
    drop = meta.get("drop") or {}
    prov = meta.get("provenance") or {}
    row = {"id": d.get("id"), "filter": drop.get("filter"), "reason": drop.get("reason"),
           "stats": (meta.get("stats") or {}).get(drop.get("filter")),
           "task": d.get("task", ""), "source": d.get("source", ""),
           "template": template_key(d), "record_id": meta.get("record_id")}
    if prov:
        row["provenance"] = prov
    return row
