"""Every template vlitc renders runs in one bounded sandbox: hostile templates fail located."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from vlitc.errors import ConfigurationError, InputError, RecipeError
from vlitc.llm.context import render as render_context
from vlitc.llm.providers.mock import MockProvider
from vlitc.recipe import load_recipe
from vlitc.templating import TemplateProblem, compile

CTX = {"caption": "a cat", "captions": ["a", "b"]}

HOSTILE = [
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "not allowed in a template"),
    ("{{ self.__init__.__globals__['os'].popen('id').read() }}", "not allowed in a template"),
    ("{{ namespace.__init__.__globals__ }}", "not allowed in a template"),
    ("{{ lipsum.__globals__.os.popen('id').read() }}", "not allowed in a template"),
    ("{{ captions.append(1) }}", "not allowed in a template"),
    ("{{ range(10**9) | list }}", "over a template limit"),
    ("{{ 'x' * 2000000000 }}", "over a template limit"),
    ("{{ [1] * 2000000000 }}", "over a template limit"),
    ("{{ '%0999999999d' % 1 }}", "over a template limit"),
    ("{{ '{:>999999999}'.format(1) }}", "over a template limit"),
    ("{{ 'x' | center(1000000000) }}", "over a template limit"),
    ("{{ ('x' * 1000000).replace('x', 'xxxxxxxx') }}", "over a template limit"),
    ("{{ (['x' * 1000000] * 1000) | join }}", "over a template limit"),
    ("{{ ('x\\n' * 400000) | indent(100) }}", "over a template limit"),
    ("{{ 2 ** 10000000 }}", "over a template limit"),
    ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "nested more than"),
    ("{% for x in [1] recursive %}{{ loop([1]) }}{% endfor %}", "nested more than"),
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
     "loop iterations"),
    ("{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}", "output longer than"),
    ("{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}"
     "{% endfor %}{{ ns.s }}", "over a template limit"),
    ("{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s + ns.s %}"
     "{% endfor %}{{ ns.s }}", "over a template limit"),
    ("{% macro m() %}{% for i in range(100000) %}" + "y" * 1000 + "{% endfor %}{% endmacro %}"
     "{{ m() | length }}", "characters built in one render"),
    ("{{ 1 // 0 }}", "ZeroDivisionError"),
    ("{{ caption + 5 }}", "TypeError"),
    ("{{ caption | nofilter }}", "no filter named 'nofilter'"),
    ("{{ captoin.upper() }}", "undefined"),
]


@pytest.mark.parametrize("text,message", HOSTILE, ids=[str(i) for i in range(len(HOSTILE))])
def test_hostile_template_is_a_template_problem(text, message):
    with pytest.raises(TemplateProblem) as info:
        compile(text).render(CTX)
    assert message in info.value.message
    assert info.value.line in (1, None)  # None: the whole output, no one line


def test_ordinary_templates_still_render():
    assert compile("{{ 'a' ~ caption ~ 3 }}").render(CTX) == "aa cat3"
    assert compile("{% for c in captions %}{{ loop.index }}{{ c }}{% if loop.last %}!{% endif %}"
                   "{% endfor %}").render(CTX) == "1a2b!"
    assert compile("{% filter upper %}{{ caption }}{% endfilter %}").render(CTX) == "A CAT"
    assert compile("{{ range(3) | list | length }} {{ caption | wordwrap(5) }}").render(CTX) == "3 a cat"


def test_runtime_error_names_the_template_line():
    with pytest.raises(TemplateProblem) as info:
        compile("line one\n{{ caption }}\n{{ 1 // 0 }}").render(CTX)
    assert info.value.line == 3


def _record() -> dict:
    return {"id": "r1", "image": {"width": 10, "height": 10}, "captions": ["A cat."],
            "objects": [{"category": "cat", "bbox": [1, 1, 5, 5]}]}


def test_malicious_context_template_cannot_run_code(tmp_path):
    evil = tmp_path / "evil.j2"
    marker = tmp_path / "pwned"
    evil.write_text("{{ captions }}\n{{ record.__class__.__init__.__globals__['os']"
                    f".popen('touch {marker}').read() }}}}\n")
    with pytest.raises(InputError) as info:
        render_context(_record(), "evil.j2", tmp_path)
    assert not marker.exists()
    assert info.value.location is not None and str(info.value.location) == f"{evil}:2:1"
    assert "not allowed in a template" in info.value.message


def test_context_template_limits_and_runtime_errors_are_located(tmp_path):
    (tmp_path / "big.j2").write_text("{{ captions }}\n\n{{ 'x' * 2000000000 }}\n")
    (tmp_path / "div.j2").write_text("{{ 1 // 0 }}\n")
    with pytest.raises(InputError) as info:
        render_context(_record(), "big.j2", tmp_path)
    assert str(info.value.location) == f"{tmp_path / 'big.j2'}:3:1"
    with pytest.raises(InputError) as info:
        render_context(_record(), "div.j2", tmp_path)
    assert "ZeroDivisionError" in info.value.message


def test_mock_script_runs_in_the_sandbox(tmp_path):
    marker = tmp_path / "pwned"
    evil = ("{{ messages.__class__.__init__.__globals__['os'].popen('touch " + str(marker)
            + "').read() }}")
    provider = MockProvider("m", {"template": evil})
    params = {"model": "mock", "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(ConfigurationError) as info:
        asyncio.run(provider.complete(params, 1))
    assert not marker.exists()
    assert "not allowed in a template" in str(info.value)
    ok = MockProvider("m", {"template": "Q: {{ last_user }}\n"})
    assert asyncio.run(ok.complete(params, 1)).texts == ["Q: hi\n"]


RECIPE = """\
vlitc: 1
name: t
sources:
  coco: {{type: coco, images: {images}, captions: {captions}}}
generators:
  g: {{provider: mock, template: "{mock}"}}
tasks:
  conv: {{kind: generate, source: coco, generator: g, prompt: llava/conversation, context: {context}}}
outputs:
  - {{format: llava, path: train.json}}
"""


def _recipe(tmp_path: Path, context: str = "llava", mock: str = "{{ last_user }}") -> Path:
    demo = Path(__file__).resolve().parents[1] / "recipes" / "data" / "demo"
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.format(images=demo / "images",
                                  captions=demo / "annotations" / "captions_demo.json",
                                  context=context, mock=mock))
    return path


@pytest.mark.exercises("generator.mock")
def test_validate_catches_a_bad_context_template_and_mock_script_at_once(tmp_path):
    (tmp_path / "ctx.j2").write_text("{{ captions }}\n{{ nope | nofilter }}\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(_recipe(tmp_path, "ctx.j2", "{{ last_user | nofilter }}"))
    got = [p.format().splitlines()[0] for p in info.value.problems]
    assert any(g.startswith(f"{tmp_path / 'ctx.j2'}:2:1: template syntax error: no filter named") for g in got)
    assert any(g.startswith(f"{tmp_path / 'r.yaml'}:6:") and "no filter named 'nofilter'" in g for g in got)


def test_validate_catches_an_undefined_context_variable(tmp_path):
    (tmp_path / "ctx.j2").write_text("{{ captions }}\n\n{{ secrets }}\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(_recipe(tmp_path, "ctx.j2"))
    first = info.value.problems[0].format().splitlines()[0]
    assert first.startswith(f"{tmp_path / 'ctx.j2'}:3:1: context template reads 'secrets'")
