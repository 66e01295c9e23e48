"""The report's page, styles and script are package data (rolekit/report_assets/), not
Python strings; the wheel carries them (tests/test_wheels.py builds one)."""

from __future__ import annotations

import ast
from pathlib import Path

import rolekit.report as report

ASSETS = ("page.html", "browser.html", "report.css", "report.js")


def test_every_fixed_part_of_the_page_is_a_package_data_file():
    for name in ASSETS:
        text = report.asset(name)
        assert text.strip(), name
    page = report.asset("page.html")
    for field in ("{title}", "{css}", "{js}", "{data}", "{sections}", "{nav}"):
        assert field in page
    assert "rolekitReady" in report.asset("report.js")


def test_report_py_holds_no_page_in_string_literals():
    tree = ast.parse(Path(report.__file__).read_text(encoding="utf-8"))
    strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    for marker in ("<!DOCTYPE", "<style", ":root{", "function (", 'class="browser"'):
        assert not [s for s in strings if marker in s], marker


def test_a_rendered_report_inlines_the_assets(tmp_path):
    (tmp_path / "config.toml").write_text('seed = 0\n[model]\nname = "tiny-random"\n')
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\n')
    page = report.build(tmp_path).read_text(encoding="utf-8")
    assert report.asset("report.css").strip() in page
    assert report.asset("report.js").strip() in page
    assert 'id="ep-list"' in page  # browser.html
    assert "{" + "css}" not in page
