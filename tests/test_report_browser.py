"""report.html renders in headless Chromium: plots drawn and every inline image decoded."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests._release_util import context
from tests.test_release_op import RECIPE, _inputs
from vlitc.ops.release import ReleaseReport

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "") if p and
                 Path(p).exists()), None)


def _chromium(tmp_path: Path, *args: str, budget_ms: int = 5000) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", f"--virtual-time-budget={budget_ms}",
         *args],
        capture_output=True, text=True, timeout=120, check=True)


def _rendered_body(tmp_path: Path, page: Path) -> str:
    """The page's ``<body>`` tag once its script has run: the images decode on the browser's own
    threads, in real time, which its virtual time does not wait for on a loaded machine (the
    page is dumped again, with a longer budget, while the script has not marked it)."""
    for budget in (5000, 20000, 60000):
        dom = _chromium(tmp_path, "--dump-dom", page.as_uri(), budget_ms=budget).stdout
        body = re.search(r"<body[^>]*>", dom).group(0)
        if "data-rendered=" in body:
            break
    return body


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_report_renders_plots_and_images_in_headless_chromium(tmp_path):
    data = _inputs(tmp_path)
    ctx = context(tmp_path, recipe=RECIPE, _inputs=lambda ref: iter(data[ref]))
    ReleaseReport({"indicators": {"response": False}}).write(ctx)
    page = ctx.out_dir / "report.html"
    body = _rendered_body(tmp_path, page)
    assert 'data-rendered="ok"' in body
    assert 'data-images="4"' in body
    assert int(re.search(r'data-plots="(\d+)"', body).group(1)) >= 4
    shot = tmp_path / "shot.png"
    _chromium(tmp_path, "--window-size=1200,1600", f"--screenshot={shot}", page.as_uri())
    from PIL import Image

    with Image.open(shot) as im:
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
    assert im.size == (1200, 1600) and len(colours) > 50  # drawn content, not a blank page
