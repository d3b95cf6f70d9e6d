"""The op reference in docs/ops.md is generated from the registry and stays current."""

from vlitc import ops_reference
from vlitc.cli.main import main


def test_ops_reference_is_current(repo_root):
    assert (repo_root / "docs" / "ops.md").read_text() == ops_reference(markdown=True), \
        "run `vlitc ops --markdown > docs/ops.md`"


def test_ops_command_lists_every_family(capsys):
    assert main(["ops"]) == 0
    out = capsys.readouterr().out
    for family in ("source", "task", "filter", "exporter"):
        assert f"\n{family:<10}" in "\n" + out
    assert main(["ops", "filter", "min_words"]) == 0
    assert "min_words" in capsys.readouterr().out
