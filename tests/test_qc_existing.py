"""The default QC on real imported data: LLaVA's 90 GPT-4 answers (joined with the 80-image COCO
captions and instances file by COCO id) are kept, copies of them with planted defects are dropped.

The planted set is of our own making, one copy per answer and defect kind: an absent object
named by a synonym, absent objects in the plural, a count in words above the annotated one, an
answer moved to another image (among those that name an object the other image lacks: the
annotations cannot tell the rest apart), leaked generator phrasing, truncation, repetition, and a
written box off every instance of its object."""

from __future__ import annotations

import copy
import random

from tests._sources_util import gpt4_answers_joined, make_ctx
from vlitc.ops import registry
from vlitc.ops.filters.mentions import NUMBER_WORDS, claims, plural, vocabulary
from vlitc.ops.tasks.text_only import Conversations

#: the QC recipes/clean-existing.yaml runs (decontamination aside)
DEFAULT_QC = [("structure", {}), ("leakage", {}), ("truncated", {}), ("repetition", {}),
              ("hallucination", {"box_format": "normalized"}), ("dedup", {"method": "exact"})]
WORDS = {v: k for k, v in NUMBER_WORDS.items()}
LEAKS = ["Based on the provided captions, ", "According to the bounding box coordinates, ",
         "As an AI language model, I would say that ", "In the given description, "]


def imported(fixtures_dir) -> list[dict]:
    join = gpt4_answers_joined(fixtures_dir)
    return list(Conversations({"source": "coco"}, "gpt4").run(join, make_ctx(fixtures_dir)))


def run_qc(samples: list[dict], ctx) -> list[str | None]:
    """Every filter's decision in turn, as a build chains them: the first reason drops."""
    out: list[str | None] = [None] * len(samples)
    for name, params in DEFAULT_QC:
        flt = registry.get("filter", name)(params, name)
        live = [i for i, r in enumerate(out) if r is None]
        for i, why in zip(live, flt.decide(flt.measure([samples[i] for i in live], ctx)), strict=True):
            out[i] = why and f"{name}: {why}"
    return out


def _absent(ann: dict, vocab, rng: random.Random) -> str:
    seen = {o["category"] for o in ann["objects"]}
    for cap in ann.get("captions") or []:
        seen |= {m.category for m in claims(cap, vocab).mentions}
    return rng.choice(sorted(vocab.categories - seen - {"person"}))


def _synonym(category: str, vocab, rng: random.Random) -> str:
    names = sorted({" ".join(p) for p, c in vocab.phrases.items() if c == category
                    and not p[-1].endswith("s")})
    return rng.choice(names)


def _far_box(ann: dict, category: str) -> list[float]:
    """A small normalised box away from every instance of ``category``."""
    w, h = ann["width"], ann["height"]
    boxes = [o["bbox"] for o in ann["objects"] if o["category"] == category]
    for x, y in ((0.02, 0.02), (0.9, 0.9), (0.9, 0.02), (0.02, 0.9), (0.45, 0.45)):
        cand = [x * w, y * h, (x + 0.06) * w, (y + 0.06) * h]
        if all(cand[2] < b[0] or cand[0] > b[2] or cand[3] < b[1] or cand[1] > b[3] for b in boxes):
            return [x, y, round(x + 0.06, 2), round(y + 0.06, 2)]
    return [0.0, 0.0, 0.01, 0.01]


def _truncate(text: str) -> str:
    words = text.split()
    cut = words[: max(9, int(len(words) * 0.6))]
    while cut and cut[-1][-1] in ".!?":
        cut = cut[:-1]
    return " ".join(cut)


def planted(samples: list[dict], vocab) -> list[tuple[str, dict]]:
    rng = random.Random(13)
    out = []
    by_image = {s["meta"]["record_id"]: s for s in samples}
    for i, s in enumerate(samples):
        ann, answer = s["meta"]["annotations"], s["turns"][1]["content"]

        def copy_with(kind: str, text: str, _s=s, _i=i) -> tuple[str, dict]:
            c = copy.deepcopy(_s)
            c["id"] = f"{kind}/{_i}"
            c["turns"][1]["content"] = text
            return kind, c

        absent = _absent(ann, vocab, rng)
        out.append(copy_with("synonym", f"{answer} There is also a {_synonym(absent, vocab, rng)} "
                                        f"right next to it."))
        two = _absent(ann, vocab, rng)
        out.append(copy_with("plural", f"{answer} Several {plural(_synonym(two, vocab, rng))} "
                                       f"are visible in the background."))
        present = sorted({o["category"] for o in ann["objects"]} - {"skis", "scissors"})
        if present:
            cat = rng.choice(present)
            n = sum(o["category"] == cat for o in ann["objects"])
            word = WORDS[min(n + 3, 20)]
            out.append(copy_with("count", f"{answer} In total there are {word} "
                                          f"{plural(_synonym(cat, vocab, rng))} in the picture."))
            out.append(copy_with("box", f"{answer} The {_synonym(cat, vocab, rng)} is at "
                                        f"{_far_box(ann, cat)}."))
        other = rng.choice([k for k in by_image if k != s["meta"]["record_id"]])
        moved = by_image[other]["turns"][1]["content"]
        mentioned = {m.category for m in claims(moved, vocab).mentions if not m.denied and not m.generic}
        grounded = {o["category"] for o in ann["objects"]}
        for cap in ann.get("captions") or []:
            grounded |= {m.category for m in claims(cap, vocab).mentions}
        if mentioned - grounded:
            out.append(copy_with("moved", moved))
        out.append(copy_with("leak", LEAKS[i % len(LEAKS)] + answer[0].lower() + answer[1:]))
        out.append(copy_with("truncated", _truncate(answer)))
        sentence = answer.rstrip().split(". ")[0].rstrip(".") + "."
        out.append(copy_with("repetition", " ".join([sentence] * 5)))
    return out


def test_default_qc_keeps_real_gpt4_answers_and_drops_planted_defects(fixtures_dir):
    vocab = vocabulary()
    samples = imported(fixtures_dir)
    assert len(samples) == 90
    kept = run_qc(samples, make_ctx(fixtures_dir))
    keep_rate = sum(k is None for k in kept) / len(samples)
    assert keep_rate >= 0.95, [(s["id"], k) for s, k in zip(samples, kept, strict=True) if k]
    bad = planted(samples, vocab)
    kinds = {k for k, _ in bad}
    assert kinds == {"synonym", "plural", "count", "box", "moved", "leak", "truncated", "repetition"}
    decisions = run_qc([c for _, c in bad], make_ctx(fixtures_dir))
    drop_rate = sum(d is not None for d in decisions) / len(bad)
    missed = [(k, c["id"], c["turns"][1]["content"][-120:])
              for (k, c), d in zip(bad, decisions, strict=True) if d is None]
    assert drop_rate >= 0.95, missed
    for kind in kinds:  # every kind of defect is caught, not only the easy ones
        got = [d for (k, _), d in zip(bad, decisions, strict=True) if k == kind]
        assert sum(d is not None for d in got) / len(got) >= 0.85, (kind, missed)
