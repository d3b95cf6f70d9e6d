"""vlitc diff compares two releases: counts, indicator shifts, samples added/removed/changed."""

from __future__ import annotations

import json

from tests._release_util import context, demo_samples
from vlitc.cli.main import main
from vlitc.ops.exporters.llava import LlavaExporter
from vlitc.ops.exporters.parquet import ParquetExporter
from vlitc.quality.indicators import compute
from vlitc.release.diff import diff_releases, format_diff
from vlitc.release.read import read_release
from vlitc.release.summary import counts


def _release(tmp_path, name, samples):
    ctx = context(tmp_path)
    ctx.out_dir = tmp_path / name
    ctx.out_dir.mkdir()
    LlavaExporter({"path": "train.json"}).export(samples, ctx)
    ParquetExporter({"path": "train.parquet"}).export(samples, ctx)
    ind = {"counts": counts(samples), "indicators": compute(samples, response=False)}
    (ctx.out_dir / "indicators.json").write_text(json.dumps(ind))
    return ctx.out_dir


def _pair(tmp_path):
    old = demo_samples(tmp_path)
    new = [s for s in demo_samples(tmp_path) if s["id"] != "text/0"]
    new[0]["turns"][1]["content"] = "A bright red square."
    extra = dict(new[0], id="caption/a/1")
    return _release(tmp_path, "old", old), _release(tmp_path, "new", new + [extra])


def test_diff_lists_added_removed_and_changed_samples(tmp_path):
    old, new = _pair(tmp_path)
    d = diff_releases(old, new)
    assert d["samples"] == {"old": 4, "new": 4, "added": ["caption/a/1"], "removed": ["text/0"],
                            "changed": ["caption/a/0"]}


def test_diff_reports_count_and_indicator_shifts(tmp_path):
    old, new = _pair(tmp_path)
    d = diff_releases(old, new)
    assert d["counts"]["task"]["caption"] == {"old": 2, "new": 3, "delta": 1}
    assert d["counts"]["task"]["text"] == {"old": 1, "new": 0, "delta": -1}
    assert d["counts"]["source"]["alpaca"]["delta"] == -1
    assert d["indicators"]["task_diversity"] == {"old": 3.0, "new": 2.0, "delta": -1.0}
    text = format_diff(d)
    assert "caption: 2 -> 3 (+1)" in text and "removed: text/0" in text


def test_identical_releases_have_no_difference(tmp_path):
    a = _release(tmp_path, "a", demo_samples(tmp_path))
    b = _release(tmp_path, "b", demo_samples(tmp_path))
    assert format_diff(diff_releases(a, b)).endswith("no difference")


def test_read_release_prefers_parquet_which_keeps_task_and_split(tmp_path):
    rel = _release(tmp_path, "r", demo_samples(tmp_path))
    samples = read_release(rel)
    assert [s["task"] for s in samples] == ["caption", "conv", "caption", "text"]
    assert samples[2]["meta"] == {"split": "validation"}
    assert samples[0]["image"] == {"root": "", "path": "a.png"}  # one image folder: no prefix
    assert read_release(rel / "train.json")[1]["turns"][2] == {"role": "user",
                                                              "content": "Is it bright?"}


def test_cli_diff_prints_and_exit_code_flags_a_difference(tmp_path, capsys):
    old, new = _pair(tmp_path)
    assert main(["diff", str(old), str(new)]) == 0
    assert "added: caption/a/1" in capsys.readouterr().out
    assert main(["diff", str(old), str(new), "--exit-code"]) == 1
    capsys.readouterr()
    assert main(["diff", str(old), str(old), "--exit-code", "--json"]) == 0
    same = json.loads(capsys.readouterr().out)
    assert same["samples"]["added"] == [] and same["indicators"] == {}


def test_cli_report_prints_stored_or_recomputed_indicators(tmp_path, capsys):
    rel = _release(tmp_path, "r", demo_samples(tmp_path))
    assert main(["report", str(rel), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["task_diversity"] == 3
    assert main(["report", str(rel / "train.parquet"), "--no-response", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["balance"]["counts"] == {
        "caption": 2, "conv": 1, "text": 1}
    assert main(["report", str(tmp_path / "nothing")]) == 2


def test_diff_html_shows_added_removed_and_changed_samples_with_their_images(tmp_path, capsys):
    old_samples = demo_samples(tmp_path)
    new_samples = [s for s in demo_samples(tmp_path) if s["id"] != "caption/c/0"]
    new_samples[0]["turns"][1]["content"] = "A bright red square."
    new_samples.append(dict(new_samples[1], id="conv/b/1"))
    releases = []
    for name, samples in (("old", old_samples), ("new", new_samples)):
        ctx = context(tmp_path)
        ctx.out_dir = tmp_path / name
        ctx.out_dir.mkdir()
        LlavaExporter({"path": "train.json", "images": "copy"}).export(samples, ctx)
        releases.append(ctx.out_dir)
    page = tmp_path / "audit.html"
    assert main(["diff", str(releases[0]), str(releases[1]), "--html", str(page)]) == 0
    assert "+1 added, -1 removed, ~1 changed" in capsys.readouterr().out
    text = page.read_text()
    added = text.split("<h2>Added samples</h2>")[1].split("<h2>")[0]
    removed = text.split("<h2>Removed samples</h2>")[1].split("<h2>")[0]
    changed = text.split("<h2>Changed samples</h2>")[1]
    assert "conv/b/1" in added and "data:image/jpeg;base64," in added
    assert "caption/c/0" in removed and "data:image/jpeg;base64," in removed
    # old beside new, each with its picture and its own text
    assert changed.count('<div class="side">') == 2 and changed.count("data:image/jpeg") == 2
    assert "A red square." in changed and "A bright red square." in changed
