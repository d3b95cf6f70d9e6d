"""Hundreds of malformed and hostile inputs, generated: recipes (every section and value type of
the schema, YAML and encoding traps), data files, templates, prompt packs and images. Each must
end as exit 2 with a message located at a file (line:col where the input has lines), no
traceback, nothing written into the output folder and no temp file left in the cache.

The CLI runs in process (``vlitc.cli.main.main``), so the whole set takes seconds.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from vlitc.cli.main import main
from vlitc.recipe import build_schema

DEMO = Path(__file__).resolve().parents[1] / "recipes" / "data" / "demo"

BASE = {
    "vlitc": 1,
    "name": "hostile",
    "version": "0.1.0",
    "seed": 7,
    "sources": {
        "coco": {"type": "coco", "images": "data/images", "captions": "data/captions.json",
                 "instances": "data/instances.json", "limit": 3, "on_missing_image": "error"},
    },
    "pools": {
        "brief": {"file": "brief.txt"},
        "inline": {"templates": ["Describe the image.", "What is in the picture?"]},
    },
    "generators": {"mock": {"provider": "mock", "template": "Question:\nWhat is it?\n===\nAnswer:\n{{ last_user[:40] }}\n"}},
    "tasks": {
        "cap": {"kind": "template", "source": "coco", "instruction": {"pool": "brief"},
                "response": "{{ caption }}", "per": "caption"},
        "conv": {"kind": "generate", "source": "coco", "generator": "mock", "prompt": "pack",
                 "context": "ctx.j2", "examples": 1, "limit": 2},
    },
    "filters": [{"type": "min_words", "min": 1}],
    "balance": {"total": 20, "mix": {"cap": 0.5, "conv": 0.5}},
    "outputs": [{"format": "llava", "path": "train.json"},
                {"format": "sharegpt", "path": "train.jsonl"}],
    "report": False,  # builds stay quick; the default report has tests of its own
}

CONTEXT = "{% for s in sentences %}{{ s }}\n{% endfor %}{% for o in objects %}{{ o.category }}: {{ o.nbox }}\n{% endfor %}"


def _write_base(root: Path) -> None:
    data = root / "data"
    (data / "images").mkdir(parents=True)
    caps = json.loads((DEMO / "annotations" / "captions_demo.json").read_text())
    inst = json.loads((DEMO / "annotations" / "instances_demo.json").read_text())
    keep = {im["id"] for im in caps["images"][:3]}
    for key, doc in (("captions", caps), ("instances", inst)):
        doc["images"] = [im for im in doc["images"] if im["id"] in keep]
        doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] in keep]
        (data / f"{key}.json").write_text(json.dumps(doc, indent=1))
    for im in caps["images"]:
        shutil.copy(DEMO / "images" / im["file_name"], data / "images" / im["file_name"])
    (root / "brief.txt").write_text("Describe the image briefly.\nGive a short caption.\n")
    (root / "ctx.j2").write_text(CONTEXT)
    pack = root / "pack"
    (pack / "examples").mkdir(parents=True)
    (pack / "system.txt").write_text("You write questions and answers about an image.\n")
    (pack / "examples" / "000_context.txt").write_text("A dog on a sofa.\n")
    (pack / "examples" / "000_response.txt").write_text("Question:\nWhat animal?\n===\nAnswer:\nA dog.\n")
    (root / "r.yaml").write_text(yaml.safe_dump(BASE, sort_keys=False))


@dataclass
class Case:
    """One hostile input: edits to the base folder, the command, where the message must point."""

    id: str
    edit: Callable[[Path], None]
    command: str = "validate"  # or "build"
    where: str = "r.yaml"  # file the message names (relative to the case folder; "" = any)
    lined: bool = True  # the message carries line:col
    extra: dict = field(default_factory=dict)


def recipe_text(text: str) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        (root / "r.yaml").write_text(text)
    return edit


def recipe_bytes(data: bytes) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        (root / "r.yaml").write_bytes(data)
    return edit


def recipe_data(mutate: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        data = copy.deepcopy(BASE)
        mutate(data)
        (root / "r.yaml").write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=False))
    return edit


def file_text(rel: str, text: str | bytes) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            p.write_bytes(text)
        else:
            p.write_text(text)
    return edit


def json_edit(rel: str, mutate: Callable[[dict], None], raw: Callable[[str], str] | None = None):
    def edit(root: Path) -> None:
        p = root / rel
        doc = json.loads(p.read_text())
        mutate(doc)
        text = json.dumps(doc, indent=1)
        p.write_text(raw(text) if raw else text)
    return edit


def both(*edits: Callable[[Path], None]) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        for e in edits:
            e(root)
    return edit


# -- recipe value mutations, generated from the schema ------------------------------------------

HOSTILE_VALUES: list[tuple[str, object]] = [
    ("null", None), ("true", True), ("negative", -7), ("float", 2.5), ("text", "zz"),
    ("list", ["x"]), ("empty_list", []), ("mapping", {"k": 1}), ("empty_text", ""),
    ("huge_int", 2 ** 70), ("nan", float("nan")), ("inf", float("inf")),
    ("nul_text", "a\x00b"),
]


def _paths(obj: object, path: tuple = ()) -> Iterator[tuple]:
    yield path
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, path + (i,))


def _set(data: dict, path: tuple, value: object) -> None:
    obj = data
    for k in path[:-1]:
        obj = obj[k]
    obj[path[-1]] = value


def _dump_ok(value: object) -> bool:
    return not (isinstance(value, str) and "\x00" in value)


#: the value the loader must refuse whatever the schema says, by the type of the value it replaces
ALWAYS_BAD = {int: "huge_int", float: "inf", str: "nul_text", bool: "nan"}
PER_PATH = 3  # values the schema rejects, tried at each key path (rotating through the types)


def schema_cases() -> list[Case]:
    """Every key path of the base recipe (every section, every value type), set to hostile
    values the recipe cannot mean: a few the schema rejects, rotating through the value types,
    and one it accepts that the loader must refuse (an integer beyond 64 bits, an infinity, a
    NUL character)."""
    validator = Draft202012Validator(build_schema())
    values = dict(HOSTILE_VALUES)
    out = []
    for n, path in enumerate(p for p in _paths(BASE) if p):
        old = _get(BASE, path)
        names = [HOSTILE_VALUES[(n + i) % len(HOSTILE_VALUES)][0] for i in range(len(HOSTILE_VALUES))]
        rejected = [k for k in names if k not in ALWAYS_BAD.values()
                    and not validator.is_valid(_with(path, copy.deepcopy(values[k])))][:PER_PATH]
        chosen = rejected + ([ALWAYS_BAD[type(old)]] if type(old) in ALWAYS_BAD else [])
        for name in chosen:
            value = values[name]
            label = ".".join(str(p) for p in path) + "=" + name
            if name == "nul_text":  # YAML cannot dump it: write the escape by hand
                text = yaml.safe_dump(_with(path, "NULMARK"), sort_keys=False).replace(
                    "NULMARK", '"a\\0b"')
                out.append(Case(label, recipe_text(text)))
            elif _dump_ok(value):
                out.append(Case(label, recipe_data(lambda d, p=path, v=value: _set(d, p, copy.deepcopy(v)))))
    return out


def _get(data: object, path: tuple) -> object:
    for k in path:
        data = data[k]  # type: ignore[index]
    return data


def _with(path: tuple, value: object) -> dict:
    data = copy.deepcopy(BASE)
    _set(data, path, value)
    return data


# -- YAML and encoding -------------------------------------------------------------------------

def _base_text() -> str:
    return yaml.safe_dump(BASE, sort_keys=False)


def yaml_cases() -> list[Case]:
    base = _base_text()
    bomb = 'vlitc: 1\nname: b\n' + 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    prev = "a"
    for c in "bcdefghi":
        bomb += f"{c}: &{c} [" + ",".join([f"*{prev}"] * 9) + "]\n"
        prev = c
    raw_cases = {
        "nul_byte": base.replace("name: hostile", "name: host\x00ile").encode(),
        "lone_surrogate_escape": base.replace("version: 0.1.0", 'version: "0.\\ud800"').encode(),
        "encoded_surrogate": base.replace("0.1.0", "0.1.0 ").encode().replace(b"0.1.0 ", b"0.1.0\xed\xa0\x80"),
        "latin1": base.replace("hostile", "hostilé").encode("latin-1"),
        "control_char": base.replace("name: hostile", "name: host\x07ile").encode(),
        "deep_nesting": (base + "deep: " + "[" * 5000 + "]" * 5000 + "\n").encode(),
        "deep_mapping": (base + "deep: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n").encode(),
        "alias_bomb": bomb.encode(),
        "recursive_alias": (base + "loop: &l [*l]\n").encode(),
        "unclosed_bracket": base.replace("limit: 3", "limit: [3").encode(),
        "unclosed_quote": base.replace("name: hostile", 'name: "hostile').encode(),
        "tab_indent": base.replace("  coco:", "\tcoco:").encode(),
        "duplicate_key": (base + "seed: 8\n").encode(),
        "python_tag": base.replace("seed: 7", "seed: !!python/object/apply:os.system [ls]").encode(),
        "bad_int_tag": base.replace("seed: 7", "seed: !!int seven").encode(),
        "binary_tag": base.replace("version: 0.1.0", "version: !!binary aGk=").encode(),
        "set_tag": base.replace("version: 0.1.0", "version: !!set {a, b}").encode(),
        "bool_key": base.replace("version: 0.1.0", "on: 0.1.0").encode(),
        "int_key": base.replace("  coco:", "  1:").encode(),
        "two_documents": (base + "---\nvlitc: 1\n").encode(),
        "empty": b"",
        "only_comment": b"# nothing\n",
        "a_list": b"- vlitc: 1\n",
        "a_scalar": b"just text\n",
        "seed_beyond_64_bits": base.replace("seed: 7", "seed: 36893488147419103232").encode(),
        "limit_beyond_64_bits": base.replace("limit: 3", "limit: 36893488147419103232").encode(),
        "nan_number": base.replace("total: 20", "total: .nan").encode(),
        "inf_budget": base.replace("seed: 7", "seed: 7\nbudget: {max_usd: .inf}").encode(),
        "complex_key": base.replace("version: 0.1.0", "? [a, b]\n: 1").encode(),
        "merge_of_scalar": base.replace("version: 0.1.0", "x: &x 1\ny: {<<: *x}").encode(),
    }
    out = [Case(f"yaml:{k}", recipe_bytes(v)) for k, v in raw_cases.items()]
    out.append(Case("yaml:folder_as_recipe", lambda root: ((root / "r.yaml").unlink(),
                                                            (root / "r.yaml").mkdir()), lined=False))
    out.append(Case("yaml:missing_recipe", lambda root: (root / "r.yaml").unlink(), lined=False))
    return out


# -- references, files, paths, templates, packs --------------------------------------------------

def _d(fn: Callable[[dict], None]) -> Callable[[Path], None]:
    return recipe_data(fn)


def semantic_cases() -> list[Case]:
    t, s = "tasks", "sources"
    cases = {
        "dangling_source": lambda d: d[t]["cap"].update(source="nope"),
        "dangling_pool": lambda d: d[t]["cap"].update(instruction={"pool": "nope"}),
        "dangling_generator": lambda d: d[t]["conv"].update(generator="nope"),
        "missing_captions_file": lambda d: d[s]["coco"].update(captions="data/none.json"),
        "missing_images_folder": lambda d: d[s]["coco"].update(images="data/none"),
        "missing_pool_file": lambda d: d["pools"]["brief"].update(file="none.txt"),
        "missing_prompt_pack": lambda d: d[t]["conv"].update(prompt="no/such/pack"),
        "missing_context_template": lambda d: d[t]["conv"].update(context="none.j2"),
        "output_absolute": lambda d: d["outputs"][0].update(path="/tmp/evil.json"),
        "output_dotdot": lambda d: d["outputs"][0].update(path="../../evil.json"),
        "output_dotdot_inside": lambda d: d["outputs"][0].update(path="a/../../evil.json"),
        "image_dir_dotdot": lambda d: d["outputs"][0].update(images="copy", image_dir="../imgs"),
        "image_dir_absolute": lambda d: d["outputs"][0].update(images="copy", image_dir="/tmp/imgs"),
        "output_backslash": lambda d: d["outputs"][0].update(path="..\\evil.json"),
        "output_is_manifest": lambda d: d["outputs"][0].update(path="manifest.json"),
        "duplicate_outputs": lambda d: d["outputs"].append({"format": "llava", "path": "train.json"}),
        "unknown_filter_in_response": lambda d: d[t]["cap"].update(response="{{ caption | nofilter }}"),
        "unknown_test_in_response": lambda d: d[t]["cap"].update(response="{% if caption is notatest %}x{% endif %}"),
        "syntax_error_in_response": lambda d: d[t]["cap"].update(response="{{ caption }"),
        "undefined_in_response": lambda d: d[t]["cap"].update(response="{{ captoin }}"),
        "syntax_error_in_pool": lambda d: d["pools"]["inline"].update(templates=["{% for %}"]),
        "unknown_filter_in_mock": lambda d: d["generators"]["mock"].update(template="{{ x | nofilter }}"),
        "syntax_error_in_mock": lambda d: d["generators"]["mock"].update(template="{{ x }"),
        "cycle": lambda d: d["pools"].update(a={"type": "expand", "seeds": {"pool": "b"}, "generator": "mock", "n": 2},
                                             b={"type": "expand", "seeds": {"pool": "a"}, "generator": "mock", "n": 2}),
        "balance_unknown_task": lambda d: d["balance"]["mix"].update(nope=0.1),
        "filter_unknown_task": lambda d: d["filters"][0].update(tasks=["nope"]),
        "mock_script_runs_code": lambda d: d["generators"]["mock"].update(
            template="{{ messages.__class__.__init__.__globals__['os'].popen('id').read() }}"),
    }
    out = [Case(f"ref:{k}", _d(v)) for k, v in cases.items()]
    out += [
        Case("everything_at_once", both(_d(lambda d: (d.update(seed=-1), d[t]["cap"].update(source="nope"),
                                                       d["outputs"][0].update(path="../x.json"))),
                                        file_text("ctx.j2", "{{ nope | nofilter }}")), extra={"min_problems": 4}),
        # context templates
        Case("ctx:syntax", file_text("ctx.j2", "line\n{% for x in %}\n"), where="ctx.j2"),
        Case("ctx:unknown_filter", file_text("ctx.j2", "{{ captions }}\n{{ captions | nofilter }}\n"), where="ctx.j2"),
        Case("ctx:undefined", file_text("ctx.j2", "{{ captions }}\n{{ secret }}\n"), where="ctx.j2"),
        Case("ctx:not_utf8", file_text("ctx.j2", b"{{ captions }}\n\xff\xfe\n"), where="ctx.j2", lined=False),
        Case("ctx:folder", lambda root: ((root / "ctx.j2").unlink(), (root / "ctx.j2").mkdir()),
             where="ctx.j2", lined=False),
        Case("ctx:popen", file_text("ctx.j2", "{{ captions }}\n{{ record.__class__.__init__.__globals__['os'].popen('id').read() }}\n"),
             command="build", where="ctx.j2"),
        Case("ctx:range_bomb", file_text("ctx.j2", "{{ captions }}\n{{ range(10**9) | list }}\n"), command="build", where="ctx.j2"),
        Case("ctx:string_bomb", file_text("ctx.j2", "{{ captions }}\n{{ 'x' * 2000000000 }}\n"), command="build", where="ctx.j2"),
        Case("ctx:zero_division", file_text("ctx.j2", "{{ captions }}\n{{ 1 // 0 }}\n"), command="build", where="ctx.j2"),
        Case("ctx:type_error", file_text("ctx.j2", "{{ captions }}\n{{ captions + 5 }}\n"), command="build", where="ctx.j2"),
        Case("ctx:recursion", file_text("ctx.j2", "{% macro f() %}{{ f() }}{% endmacro %}\n{{ f() }}{{ captions }}\n"),
             command="build", where="ctx.j2"),
        Case("ctx:append", file_text("ctx.j2", "{{ captions }}\n{{ captions.append(1) }}\n"), command="build", where="ctx.j2"),
        # response templates that fail only when rendered
        Case("resp:zero_division", _d(lambda d: d[t]["cap"].update(response="{{ caption }}{{ 1 // 0 }}")), command="build"),
        Case("resp:type_error", _d(lambda d: d[t]["cap"].update(response="{{ caption + 5 }}")), command="build"),
        Case("resp:string_bomb", _d(lambda d: d[t]["cap"].update(response="{{ caption * 2000000000 }}")), command="build"),
        Case("resp:range_bomb", _d(lambda d: d[t]["cap"].update(response="{{ caption }}{% for i in range(10**9) %}{% endfor %}")),
             command="build"),
        Case("resp:popen", _d(lambda d: d[t]["cap"].update(
            response="{{ caption.__class__.__mro__[1].__subclasses__() }}")), command="build"),
        Case("pool:zero_division", file_text("brief.txt", "Describe it.\n{{ 1 // 0 }}\n"), command="build", where="brief.txt"),
        Case("pool:unknown_filter", file_text("brief.txt", "Describe it.\n{{ caption | nofilter }}\n"), where="brief.txt"),
        Case("pool:syntax", file_text("brief.txt", "Describe it.\n{% if %}\n"), where="brief.txt"),
        Case("pool:not_utf8", file_text("brief.txt", b"Describe it.\n\xff\n"), where="brief.txt", lined=False),
        Case("pool:yaml_too_deep", both(_d(lambda d: d["pools"]["brief"].update(file="deep.yaml")),
                                        file_text("deep.yaml", "- " + "[" * 5000 + "]" * 5000 + "\n")),
             where="deep.yaml"),
        # prompt packs
        Case("pack:system_not_utf8", file_text("pack/system.txt", b"\xff\xfe system"), where="pack/system.txt", lined=False),
        Case("pack:example_not_utf8", file_text("pack/examples/000_context.txt", b"a\n\xc3\x28\n"),
             where="pack/examples/000_context.txt", lined=False),
        Case("pack:example_folder", lambda root: (root / "pack" / "examples" / "001_context.txt").mkdir(),
             where="pack/examples/001_context.txt", lined=False),
        Case("pack:missing_response", lambda root: (root / "pack" / "examples" / "000_response.txt").unlink()),
        Case("pack:stray_file", file_text("pack/examples/notes.md", "x"), where="pack/examples/notes.md", lined=False),
        Case("pack:no_system", lambda root: (root / "pack" / "system.txt").unlink()),
    ]
    return out


# -- data files and images ------------------------------------------------------------------------

CAP, INST = "data/captions.json", "data/instances.json"


def _first_ann(doc: dict) -> dict:
    return doc["annotations"][0]


def data_cases() -> list[Case]:
    def box(v):
        return json_edit(INST, lambda d: _first_ann(d).update(bbox=v),
                         raw=lambda s: s.replace('"BOXMARK"', v) if isinstance(v, str) else s)

    def raw_box(text: str):
        return json_edit(INST, lambda d: _first_ann(d).update(bbox="BOXMARK"),
                         raw=lambda s: s.replace('"BOXMARK"', text))

    cases = [
        ("captions_not_json", file_text(CAP, "{not json"), CAP, True),
        ("captions_truncated", lambda root: (root / CAP).write_text((root / CAP).read_text()[:100]), CAP, True),
        ("captions_empty", file_text(CAP, ""), CAP, True),
        ("captions_list", file_text(CAP, "[1, 2]"), CAP, False),
        ("captions_not_utf8", file_text(CAP, b'{"images": ["\xff"]}'), CAP, False),
        ("captions_annotations_string", json_edit(CAP, lambda d: d.update(annotations="abc")), CAP, False),
        ("captions_annotation_string", json_edit(CAP, lambda d: d["annotations"].insert(0, "abc")), CAP, False),
        ("captions_annotation_number", json_edit(CAP, lambda d: d["annotations"].insert(0, 5)), CAP, False),
        ("captions_image_string", json_edit(CAP, lambda d: d["images"].insert(0, "abc")), CAP, False),
        ("captions_image_without_id", json_edit(CAP, lambda d: d["images"][0].pop("id")), CAP, False),
        ("captions_image_id_list", json_edit(CAP, lambda d: d["images"][0].update(id=[1])), CAP, False),
        ("captions_surrogate", json_edit(CAP, lambda d: _first_ann(d).update(caption="SURR"),
                                         raw=lambda s: s.replace('"SURR"', '"a \\ud800 b"')), CAP, False),
        ("instances_surrogate_category", json_edit(INST, lambda d: d["categories"][0].update(name="SURR"),
                                                   raw=lambda s: s.replace('"SURR"', '"\\udfff"')), INST, False),
        ("box_nan", raw_box("[NaN, 1, 2, 3]"), INST, False),
        ("box_infinity", raw_box("[1, 1, Infinity, 3]"), INST, False),
        ("box_huge", raw_box("[1, 1, 1e999, 3]"), INST, False),
        ("instances_annotation_string", json_edit(INST, lambda d: d["annotations"].insert(0, "abc")), INST, False),
        ("file_name_dotdot", json_edit(INST, lambda d: d["images"][0].update(file_name="../../evil.png")), CAP, False),
        ("file_name_absolute", json_edit(INST, lambda d: d["images"][0].update(file_name="/etc/passwd")), CAP, False),
        ("file_name_number", json_edit(INST, lambda d: d["images"][0].update(file_name=5)), CAP, False),
    ]
    out = [Case(f"data:{k}", e, command="build", where=w, lined=ln) for k, e, w, ln in cases]

    def first_image(root: Path) -> Path:
        name = json.loads((root / CAP).read_text())["images"][0]["file_name"]
        return root / "data" / "images" / name

    def image(write: Callable[[Path], None]) -> Callable[[Path], None]:
        def edit(root: Path) -> None:
            p = first_image(root)
            p.unlink()
            write(p)
        return edit

    def bomb_png(p: Path) -> None:
        import struct
        import zlib
        raw = first_png_bytes()
        ihdr = struct.pack(">IIBBBBB", 200000, 200000, 8, 2, 0, 0, 0)
        chunk = b"IHDR" + ihdr
        p.write_bytes(raw[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + raw[33:])

    def outside_link(p: Path) -> None:
        target = p.parents[3] / "secret.png"
        shutil.copy(DEMO / "images" / "000000000001.png", target)
        p.symlink_to(target)

    images = [
        ("image_truncated", lambda p: p.write_bytes(first_png_bytes()[:60])),
        ("image_empty", lambda p: p.write_bytes(b"")),
        ("image_text", lambda p: p.write_text("not an image")),
        ("image_folder", lambda p: p.mkdir()),
        ("image_missing", lambda p: None),
        ("image_bomb_header", bomb_png),
        ("image_link_outside", outside_link),
        ("image_dangling_link", lambda p: p.symlink_to(p.parent / "nothing.png")),
    ]
    out += [Case(f"image:{k}", image(w), command="build", where="", lined=False) for k, w in images]
    return out


def first_png_bytes() -> bytes:
    return (DEMO / "images" / "000000000001.png").read_bytes()


CASES = schema_cases() + yaml_cases() + semantic_cases() + data_cases()

_LOCATED = re.compile(r"^(?:error: )?(?P<file>/[^:\n]+?)(?::(?P<line>\d+):(?P<col>\d+))?: ", re.M)


def test_at_least_two_hundred_hostile_inputs():
    assert len(CASES) >= 200
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("base")
    _write_base(root)
    return root


def test_the_base_recipe_builds(base_dir, tmp_path, capsys):
    case = tmp_path / "case"
    shutil.copytree(base_dir, case, symlinks=True)
    rc = main(["build", str(case / "r.yaml"), "--out", str(tmp_path / "out" / "release"),
               "--cache-dir", str(tmp_path / "cache"), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "release" / "train.json").is_file()


def _temp_files(cache: Path) -> list[Path]:
    if not cache.exists():
        return []
    out = [p for p in (cache / "tmp").rglob("*")] if (cache / "tmp").exists() else []
    out += [p for p in cache.rglob("*") if p.name.startswith((".tmp-", ".llm-store-"))]
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_is_a_located_error(case: Case, base_dir, tmp_path, capsys, monkeypatch):
    root = tmp_path / "case"
    shutil.copytree(base_dir, root, symlinks=True)
    case.edit(root)
    out_parent = tmp_path / "out"
    out_parent.mkdir()
    cache = tmp_path / "cache"
    monkeypatch.chdir(tmp_path)
    args = [case.command, str(root / "r.yaml"), "--cache-dir", str(cache)]
    if case.command == "build":
        args += ["--out", str(out_parent / "release"), "--quiet"]
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and "internal error" not in err, err
    located = [m for m in _LOCATED.finditer(err) if Path(m["file"]).exists() or m["file"].startswith(str(root))]
    assert located, f"no message located at a file:\n{err}"
    if case.where:
        want = str(root / case.where)
        hits = [m for m in located if m["file"] == want]
        assert hits, f"no message located at {want}:\n{err}"
        if case.lined:
            assert any(m["line"] for m in hits), f"no line:col in a message at {want}:\n{err}"
    if "min_problems" in case.extra:
        assert len(located) >= case.extra["min_problems"], err
    assert list(out_parent.iterdir()) == [], "something was written into the output folder"
    assert _temp_files(cache) == [], "a temp file was left in the cache"


@pytest.mark.parametrize("bbox", ['"1,2,3,4"', "[1, 2]", "null", '["a", 1, 2, 3]'])
def test_a_box_that_cannot_be_read_is_counted_and_left_out(bbox, base_dir, tmp_path, capsys):
    """Not every flaw of a dataset stops a build: an unreadable box is counted in the manifest
    (``unreadable_box``) and its object left out; no NaN or infinity reaches the release."""
    root = tmp_path / "case"
    shutil.copytree(base_dir, root, symlinks=True)
    json_edit(INST, lambda d: _first_ann(d).update(bbox="BOXMARK"),
              raw=lambda s: s.replace('"BOXMARK"', bbox))(root)
    out = tmp_path / "out"
    rc = main(["build", str(root / "r.yaml"), "--out", str(out), "--cache-dir", str(tmp_path / "c"),
               "--quiet"])
    assert rc == 0, capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    counts = [s.get("counters", {}) for s in manifest["steps"] if s["id"] == "source:coco"]
    assert counts and counts[0].get("unreadable_box") == 1
    text = (out / "train.json").read_text()
    assert "NaN" not in text and "Infinity" not in text


@pytest.mark.parametrize("database", ["cache.db", "*.sqlite"])
def test_a_damaged_cache_database_is_a_located_error(database, base_dir, tmp_path, capsys):
    """Every store of the cache (diskcache's, the per-file tables') that is not a database."""
    root = tmp_path / "case"
    shutil.copytree(base_dir, root, symlinks=True)
    cache = tmp_path / "cache"
    args = ["build", str(root / "r.yaml"), "--cache-dir", str(cache), "--quiet"]
    assert main(args + ["--out", str(tmp_path / "first")]) == 0
    damaged = list(cache.rglob(database))
    assert damaged
    for db in damaged:
        db.write_bytes(b"not a database " * 64)
    for wal in list(cache.rglob(f"{database}-*")):
        wal.unlink()
    capsys.readouterr()
    rc = main(args + ["--out", str(tmp_path / "out" / "second"), "--force", "all"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"error: {cache}: a cache database is damaged"), err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
    assert _temp_files(cache) == []


@pytest.mark.parametrize("which", ["output", "cache"])
def test_an_unwritable_output_or_cache_folder_is_found_before_anything_runs(which, base_dir, tmp_path,
                                                                           capsys):
    root = tmp_path / "case"
    shutil.copytree(base_dir, root, symlinks=True)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder must go")
    out = blocker / "release" if which == "output" else tmp_path / "out" / "release"
    cache = tmp_path / "cache" if which == "output" else blocker / "cache"
    rc = main(["build", str(root / "r.yaml"), "--out", str(out), "--cache-dir", str(cache), "--quiet"])
    err = capsys.readouterr().err
    folder = out.parent if which == "output" else cache
    assert rc == 2 and err.startswith(f"error: {folder}: the {which} folder cannot be written"), err
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache" / "steps").rglob("*"))


def test_a_missing_optional_package_is_found_by_validate(base_dir, tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("pyarrow", "ray") else real(name, *a))
    root = tmp_path / "case"
    shutil.copytree(base_dir, root, symlinks=True)
    recipe_data(lambda d: (d["outputs"].append({"format": "parquet", "path": "train.parquet"}),
                           d.update(execution={"engine": "ray"})))(root)
    assert main(["validate", str(root / "r.yaml")]) == 2
    err = capsys.readouterr().err
    assert "exporter 'parquet' needs the package 'pyarrow'" in err and "vlitc[parquet]" in err
    assert "the ray engine needs the package 'ray'" in err and "vlitc[ray]" in err
