"""The HTML report rendered by headless Chromium: no errors, one bar per segment."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from PIL import Image

from annotator.query import Annotations

pytestmark = pytest.mark.vllm

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=15000"]


def _chromium(*args: str) -> str:
    assert CHROMIUM, "chromium is not installed (make setup installs it)"
    done = subprocess.run(
        [CHROMIUM, *FLAGS, *args], capture_output=True, text=True, timeout=180, check=True
    )
    return done.stdout


@pytest.fixture(scope="module")
def report(baseline, tmp_path_factory):
    from click.testing import CliRunner

    from annotator.cli import main

    out, _ = baseline
    dest = tmp_path_factory.mktemp("report") / "report.html"
    result = CliRunner().invoke(main, ["report", str(out), "--html", str(dest)])
    assert result.exit_code == 0, result.output
    return out, dest


def test_report_is_self_contained(report):
    _, page = report
    text = page.read_text()
    assert "<script src" not in text and "<link" not in text  # every script and style inline
    markup = re.sub(r"<script>.*?</script>", "", text, flags=re.S)  # plotly.js's own strings aside
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", markup)


def test_report_renders_without_errors_and_one_bar_per_segment(report):
    out, page = report
    dom = _chromium("--dump-dom", page.as_uri())
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert 'data-rendered="true"' in body, body
    assert 'data-errors="0"' in body, body
    rows = (
        Annotations(str(out))
        .sql("SELECT call_id, count(*) FROM segments GROUP BY 1 ORDER BY 2 DESC")
        .fetchall()
    )
    assert len(rows) <= 20  # the corpus is small enough for every call to be drawn
    for call_id, n in rows:
        start = dom.index(f'id="timeline-{call_id}"')
        ends = [dom.find(marker, start) for marker in ('class="recording"', "<h2")]
        section = dom[start : min(e for e in ends if e > 0)]
        assert section.count('class="point"') == n, call_id  # one bar per segment


def test_report_screenshot_shows_the_emotion_colours(report, tmp_path):
    from annotator.report.html import colours

    out, page = report
    shot = tmp_path / "report.png"
    _chromium("--window-size=1280,1600", f"--screenshot={shot}", page.as_uri())
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 1600)
    pixels = set(image.getdata())
    emotions = [
        r[0] for r in Annotations(str(out)).sql("SELECT DISTINCT emotion FROM segments").fetchall()
    ]
    for emotion, hex_colour in colours(sorted(emotions)).items():
        rgb = tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
        assert rgb in pixels, f"no {emotion} bar drawn"
