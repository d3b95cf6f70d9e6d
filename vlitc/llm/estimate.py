"""What a generation step will cost before it runs: calls, tokens and USD (``vlitc plan``).

Estimates use about four characters per token. A ``generate`` step's prompt is its pack's system
prompt, ``examples`` of its in-context examples and one context of average example length; its
answers are as long as the average example response (capped by ``max_tokens``). A ``rewrite``
step sends its instructions and one sample and gets one sample back.

A step with ``image: true`` adds, per call, the image tokens of its images as the generator
prepares them (OpenAI's tile rule, Anthropic's pixel rule, or the ``prices`` override), from the
sizes of the source's images when the source is cached (``image_sizes``), else from a
1024x768 image. With ``context: none`` the item's text is the pack's instruction alone.
"""

from __future__ import annotations

from pathlib import Path

from vlitc.llm.cost import cost, price_for

CHARS_PER_TOKEN = 4
REWRITE_SAMPLE_CHARS = 1200  # a typical generated conversation


def _tokens(chars: float) -> int:
    return int(round(chars / CHARS_PER_TOKEN))


def _generate_shape(op_params: dict, recipe_dir: Path | None) -> tuple[int, int]:
    """(prompt tokens per call, completion tokens per sample) of a ``generate`` step."""
    from vlitc.llm.prompts import load_pack

    pack = load_pack(op_params["prompt"], recipe_dir)
    ex = pack.examples
    k = min(op_params.get("examples", 2), len(ex))
    avg_ctx = sum(len(c) for c, _ in ex) / len(ex) if ex else 600
    avg_resp = sum(len(r) for _, r in ex) / len(ex) if ex else 800
    item = len(pack.user) if op_params.get("context") == "none" else avg_ctx
    prompt = len(pack.system) + k * (avg_ctx + avg_resp) + item
    return _tokens(prompt) + 4 * (2 * k + 2), _tokens(avg_resp)


ASSUMED_IMAGE = (1024, 768)


def image_tokens_per_call(generator_config: dict, sizes: list | None) -> float:
    """Mean image tokens of one request's image on this generator, from source image sizes."""
    from vlitc.llm.vision import Prep, image_tokens

    provider = generator_config.get("provider", "openai")
    prep = Prep.for_generator(provider, generator_config.get("image"))
    sizes = [tuple(s) for s in sizes or [] if s and s[0] and s[1]] or [ASSUMED_IMAGE]
    model, prices = generator_config.get("model", ""), generator_config.get("prices")
    return sum(image_tokens(provider, model, *prep.target(int(w), int(h)), prep.detail, prices)
               for w, h in sizes) / len(sizes)


def estimate(
    op_params: dict,
    generator_config: dict,
    n_items: int,
    recipe_dir: Path | None = None,
    image_sizes: list | None = None,
) -> dict:
    """``{"calls", "prompt_tokens", "completion_tokens", "usd"}`` for ``n_items`` inputs; when the
    count is not known yet (``n_items < 0``) the figures are per input, marked ``per_item``."""
    per_item = n_items is None or n_items < 0
    n_items = 1 if per_item else n_items
    if op_params.get("limit") and not per_item:
        n_items = min(n_items, int(op_params["limit"]))
    n = int(op_params.get("n", 1))
    if "prompt" in op_params:
        prompt, completion = _generate_shape(op_params, recipe_dir)
    else:  # rewrite: instructions + one sample in, one sample out
        from vlitc.llm.prompts import REWRITE_INSTRUCTIONS

        instr = op_params.get("instructions") or REWRITE_INSTRUCTIONS
        prompt, completion, n = (
            _tokens(len(instr) + REWRITE_SAMPLE_CHARS),
            _tokens(REWRITE_SAMPLE_CHARS),
            1,
        )
    cap = op_params.get("max_tokens") or generator_config.get("max_tokens")
    if cap:
        completion = min(completion, int(cap))
    one_call_per_sample = calls_per_sample(generator_config)
    calls = n_items * (n if one_call_per_sample else 1)
    images = 0
    if op_params.get("image"):
        images = calls
        prompt += int(round(image_tokens_per_call(generator_config, image_sizes)))
    out = _figures(generator_config, calls, calls * prompt, n_items * n * completion, images,
                   per_item)
    if one_call_per_sample and n > 1:
        out["note"] = _n_note(generator_config, n)
    return out


def _figures(generator_config: dict, calls: int, prompt_tokens: int, completion_tokens: int,
             images: int, per_item: bool) -> dict:
    """One estimate's figures, priced at the generator's model."""
    price = price_for(generator_config.get("model", ""), generator_config.get("prices"))
    return {
        "calls": calls,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "usd": round(cost(price, prompt_tokens, completion_tokens), 4),
        "priced": price is not None,
        "images": images,
        "per_item": per_item,
    }


def calls_per_sample(generator_config: dict) -> bool:
    """Whether ``n`` samples cost ``n`` calls on this generator: always on providers without
    ``n`` (Anthropic, the mock), and on an OpenAI-compatible server other than OpenAI's own
    endpoint unless the recipe declares ``supports_n: true`` (llama.cpp answers ``n: 5`` with one
    choice, so the build sends the other four as calls of their own)."""
    if generator_config.get("provider") != "openai":
        return True
    if generator_config.get("supports_n") is not None:
        return not generator_config["supports_n"]
    base = generator_config.get("base_url")
    return bool(base) and "api.openai.com" not in str(base)


def _n_note(generator_config: dict, n: int) -> str:
    if generator_config.get("provider") == "openai":
        return f"{n} samples counted as {n} calls per item (a server other than OpenAI's may " \
               "return fewer choices than n; set supports_n: true on the generator if it does not)"
    return f"{n} samples cost {n} calls per item (the provider has no n)"


#: what one vote of an LLM-rating filter sends and gets back, in characters
VOTE_PROMPT_CHARS = 1800  # instructions, the description the generator saw, the sample
VOTE_ANSWER_CHARS = 240  # a sentence of reasons and the VERDICT/SCORE line


def estimate_votes(
    votes: int, generator_config: dict, n_items: int, image: bool = False,
    image_sizes: list | None = None,
) -> dict:
    """Calls, tokens and USD of a filter that asks a model ``votes`` times per sample (``judge``,
    ``complexity``), for ``n_items`` samples (``< 0``: per sample)."""
    per_item = n_items is None or n_items < 0
    n_items = 1 if per_item else n_items
    cap = generator_config.get("max_tokens")
    completion = _tokens(VOTE_ANSWER_CHARS) if not cap else min(_tokens(VOTE_ANSWER_CHARS), int(cap))
    calls = n_items * (votes if calls_per_sample(generator_config) else 1)
    prompt = _tokens(VOTE_PROMPT_CHARS)
    if image:
        prompt += int(round(image_tokens_per_call(generator_config, image_sizes)))
    return _figures(generator_config, calls, calls * prompt, n_items * votes * completion,
                    calls if image else 0, per_item)


def totals(estimates: dict[str, dict], generator_of: dict[str, str]) -> dict:
    """Per generator and for the whole build: the sums of the step estimates (steps whose count
    of inputs is not known yet are left out of the sums and listed as ``per_item``)."""
    fields = ("calls", "prompt_tokens", "completion_tokens", "images", "usd")

    def zero() -> dict:
        return {**dict.fromkeys(fields, 0), "steps": [], "per_item": []}

    build: dict = zero()
    gens: dict[str, dict] = {}
    for sid, e in estimates.items():
        g = gens.setdefault(generator_of.get(sid, "?"), zero())
        for into in (g, build):
            if e.get("per_item"):
                into["per_item"].append(sid)
                continue
            into["steps"].append(sid)
            for f in fields:
                into[f] += e.get(f, 0)
    for t in (build, *gens.values()):
        t["usd"] = round(t["usd"], 4)
    return {"generators": gens, "build": build}
