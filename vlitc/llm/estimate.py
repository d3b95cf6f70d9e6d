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
    one_call_per_sample = generator_config.get("provider") != "openai"
    calls = n_items * (n if one_call_per_sample else 1)
    images = 0
    if op_params.get("image"):
        images = calls
        prompt += int(round(image_tokens_per_call(generator_config, image_sizes)))
    prompt_tokens = calls * prompt
    completion_tokens = n_items * n * completion
    price = price_for(generator_config.get("model", ""), generator_config.get("prices"))
    return {
        "calls": calls,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "usd": round(cost(price, prompt_tokens, completion_tokens), 4),
        "priced": price is not None,
        "images": images,
        "per_item": per_item,
        **({"note": f"{n} samples cost {n} calls per item (the provider has no n)"}
           if one_call_per_sample and n > 1 else {}),
    }
