"""What a generation step will cost before it runs: calls, tokens and USD (``vlitc plan``).

Estimates use about four characters per token. A ``generate`` step's prompt is its pack's system
prompt, ``examples`` of its in-context examples and one context of average example length; its
answers are as long as the average example response (capped by ``max_tokens``). A ``rewrite``
step sends its instructions and one sample and gets one sample back.

A step with ``image: true`` adds, per call, the image tokens of its images as the generator
prepares them (OpenAI's tile rule, Anthropic's pixel rule, or the ``prices`` override), from the
sizes of the source's images when the source is cached (``image_sizes``), else from a
1024x768 image. With ``context: none`` the item's text is the pack's instruction alone.

Prompt caching: the stable prefix of a step's requests (the system prompt, then the drawn
in-context examples) is known before anything runs. On Anthropic (``prompt_cache`` on) and
OpenAI's own endpoint, a prefix of at least the model's minimum (:func:`cache_minimum`) is
written by the first call that sends it and read by every later one: the system prompt by all
calls, the examples by the calls that drew the same ordered examples (of ``N!/(N-k)!`` possible
draws, a step of ``M`` items draws ``D(1 - (1 - 1/D)^M)`` distinct ones). OpenAI reads in steps
of 128 tokens and writes for free; Anthropic writes at its cache-write rate.
"""

from __future__ import annotations

from pathlib import Path

from vlitc.llm.cost import cache_minimum, cost, generator_price, saved

CHARS_PER_TOKEN = 4
REWRITE_SAMPLE_CHARS = 1200  # a typical generated conversation


def _tokens(chars: float) -> int:
    return int(round(chars / CHARS_PER_TOKEN))


def _generate_shape(op_params: dict, recipe_dir: Path | None) -> tuple[int, int, dict]:
    """(prompt tokens per call, completion tokens per sample, stable prefix) of a ``generate``
    step; the prefix: tokens of the system prompt and of one example pair, examples drawn of
    examples in the pack."""
    from vlitc.llm.prompts import load_pack

    pack = load_pack(op_params["prompt"], recipe_dir)
    ex = pack.examples
    k = min(op_params.get("examples", 2), len(ex))
    avg_ctx = sum(len(c) for c, _ in ex) / len(ex) if ex else 600
    avg_resp = sum(len(r) for _, r in ex) / len(ex) if ex else 800
    item = len(pack.user) if op_params.get("context") == "none" else avg_ctx
    prompt = len(pack.system) + k * (avg_ctx + avg_resp) + item
    prefix = {"system": _tokens(len(pack.system)) + 4, "pair": _tokens(avg_ctx + avg_resp) + 8,
              "k": k, "of": len(ex)}
    return _tokens(prompt) + 4 * (2 * k + 2), _tokens(avg_resp), prefix


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


def _shape(op_params: dict, generator_config: dict,
           recipe_dir: Path | None) -> tuple[int, int, int, dict]:
    """(prompt tokens per call, completion tokens per sample, samples per item, stable prefix)
    of a ``generate`` or ``rewrite`` step, completions capped by ``max_tokens``."""
    n = int(op_params.get("n", 1))
    if "prompt" in op_params:
        prompt, completion, prefix = _generate_shape(op_params, recipe_dir)
    else:  # rewrite: instructions + one sample in, one sample out
        from vlitc.llm.prompts import REWRITE_INSTRUCTIONS

        instr = op_params.get("instructions") or REWRITE_INSTRUCTIONS
        prompt, completion, n = (
            _tokens(len(instr) + REWRITE_SAMPLE_CHARS),
            _tokens(REWRITE_SAMPLE_CHARS),
            1,
        )
        prefix = {"system": _tokens(len(instr)) + 4, "pair": 0, "k": 0, "of": 0}
    cap = op_params.get("max_tokens") or generator_config.get("max_tokens")
    if cap:
        completion = min(completion, int(cap))
    return prompt, completion, n, prefix


def sample_completion(op_params: dict, generator_config: dict, recipe_dir: Path | None = None) -> int:
    """Completion tokens of one sample of a ``generate`` or ``rewrite`` step."""
    return _shape(op_params, generator_config, recipe_dir)[1]


def stable_prefix(op_params: dict, generator_config: dict, recipe_dir: Path | None = None) -> dict:
    """The prefix a provider's prompt cache can serve of a ``generate`` or ``rewrite`` step's
    requests (see :func:`prompt_cache`)."""
    return _shape(op_params, generator_config, recipe_dir)[3]


def vote_completion(generator_config: dict) -> int:
    """Completion tokens of one vote of an LLM-rating filter."""
    cap = generator_config.get("max_tokens")
    return _tokens(VOTE_ANSWER_CHARS) if not cap else min(_tokens(VOTE_ANSWER_CHARS), int(cap))


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
    prompt, completion, n, prefix = _shape(op_params, generator_config, recipe_dir)
    one_call_per_sample = calls_per_sample(generator_config)
    calls = n_items * (n if one_call_per_sample else 1)
    images = 0
    if op_params.get("image"):
        images = calls
        prompt += int(round(image_tokens_per_call(generator_config, image_sizes)))
    cached = prompt_cache(generator_config, prefix, n_items, calls)
    out = _figures(generator_config, calls, calls * prompt, n_items * n * completion, images,
                   per_item, *cached)
    if one_call_per_sample and n > 1:
        out["note"] = _n_note(generator_config, n)
    return out


def caches_prompts(generator_config: dict) -> bool:
    """Whether this generator's provider reports prompt-cache reads: Anthropic with
    ``prompt_cache`` on, OpenAI's own endpoint (automatic)."""
    provider = generator_config.get("provider")
    if provider == "anthropic":
        return generator_config.get("prompt_cache") is not False
    base = generator_config.get("base_url")
    return provider == "openai" and (not base or "api.openai.com" in str(base))


def prompt_cache(generator_config: dict, prefix: dict, items: int, calls: int) -> tuple[int, int]:
    """(cache-read, cache-write) prompt tokens of ``calls`` calls for ``items`` items sharing
    the stable ``prefix`` (see the module doc)."""
    if not caches_prompts(generator_config) or calls <= 0:
        return 0, 0
    openai = generator_config.get("provider") == "openai"
    least = cache_minimum(generator_config.get("provider", ""), generator_config.get("model", ""))

    def hit(tokens: float) -> float:
        if tokens < least:
            return 0
        return least + (tokens - least) // 128 * 128 if openai else tokens

    system, full = prefix["system"], prefix["system"] + prefix["k"] * prefix["pair"]
    draws = 1
    for i in range(prefix["k"]):
        draws *= prefix["of"] - i
    distinct = min(calls, draws * (1 - (1 - 1 / draws) ** max(items, 1))) if draws > 1 else 1
    # first call: writes its prefix; other new draws: read the system prompt, write the rest;
    # repeated draws: read the whole prefix
    read = (distinct - 1) * hit(system) + (calls - distinct) * hit(full)
    write = 0.0
    if not openai:
        top = full if full >= least else system if system >= least else 0
        write = hit(top) + (distinct - 1) * (hit(top) - hit(system) if top == full else 0)
    return int(round(read)), int(round(write))


def _figures(generator_config: dict, calls: int, prompt_tokens: int, completion_tokens: int,
             images: int, per_item: bool, cache_read: int = 0, cache_write: int = 0) -> dict:
    """One estimate's figures, priced at the generator's model (at the batch price when it
    sends through a batch API: ``batch: true`` in the figures)."""
    price = generator_price(generator_config)
    out = {
        "calls": calls,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "cache_read_tokens": cache_read,
        "cache_write_tokens": cache_write,
        "usd": round(cost(price, prompt_tokens, completion_tokens, cache_read, cache_write), 4),
        "usd_saved": round(saved(price, cache_read, cache_write), 4),
        "priced": price is not None,
        "images": images,
        "per_item": per_item,
    }
    if generator_config.get("batch"):
        out["batch"] = True
    return out


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


def estimate_todo(todo: list[tuple[int, int, int, int]], generator_config: dict,
                  completion_per_sample: float, prefix: dict | None = None) -> dict:
    """The figures of the requests a step would send beyond what the response cache holds
    (from :mod:`vlitc.run.items`: per request, the samples missing and its prompt's text tokens,
    image tokens and images), their answers ``completion_per_sample`` tokens long; with a
    stable ``prefix``, what a provider's prompt cache would serve of them."""
    per_sample = calls_per_sample(generator_config)
    calls = prompt = images = samples = 0
    for missing, text, image, n_images in todo:
        k = missing if per_sample else 1
        calls += k
        prompt += k * (text + image)
        images += k * n_images
        samples += missing
    cached = prompt_cache(generator_config, prefix, len(todo), calls) if prefix else (0, 0)
    return _figures(generator_config, calls, prompt, int(round(samples * completion_per_sample)),
                    images, False, *cached)


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
    completion = vote_completion(generator_config)
    calls = n_items * (votes if calls_per_sample(generator_config) else 1)
    prompt = _tokens(VOTE_PROMPT_CHARS)
    if image:
        prompt += int(round(image_tokens_per_call(generator_config, image_sizes)))
    return _figures(generator_config, calls, calls * prompt, n_items * votes * completion,
                    calls if image else 0, per_item)


def totals(estimates: dict[str, dict], generator_of: dict[str, str]) -> dict:
    """Per generator and for the whole build: the sums of the step estimates (steps whose count
    of inputs is not known yet are left out of the sums and listed as ``per_item``)."""
    fields = ("calls", "prompt_tokens", "completion_tokens", "cache_read_tokens",
              "cache_write_tokens", "images", "usd", "usd_saved")

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
        t["usd"], t["usd_saved"] = round(t["usd"], 4), round(t["usd_saved"], 4)
    return {"generators": gens, "build": build}
