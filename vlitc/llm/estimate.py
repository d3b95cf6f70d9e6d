"""What a generation step will cost before it runs: calls, tokens and USD (``vlitc plan``).

Estimates use about four characters per token. A ``generate`` step's prompt is its pack's system
prompt, ``examples`` of its in-context examples and one context of average example length; its
answers are as long as the average example response (capped by ``max_tokens``). A ``rewrite``
step sends its instructions and one sample and gets one sample back.
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
    prompt = len(pack.system) + k * (avg_ctx + avg_resp) + avg_ctx
    return _tokens(prompt) + 4 * (2 * k + 2), _tokens(avg_resp)


def estimate(
    op_params: dict, generator_config: dict, n_items: int, recipe_dir: Path | None = None
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
    prompt_tokens = calls * prompt
    completion_tokens = n_items * n * completion
    price = price_for(generator_config.get("model", ""), generator_config.get("prices"))
    return {
        "calls": calls,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "usd": round(cost(price, prompt_tokens, completion_tokens), 4),
        "priced": price is not None,
        "per_item": per_item,
    }
