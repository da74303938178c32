"""The report's HTML page in headless Chromium: it loads offline with no console errors, fetches
nothing, and shows its tables and decoded images; a screenshot is kept as a test artifact
(``$IQA_TEST_ARTIFACTS``, default ``test-artifacts/``, beside the default store, not in it)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from paper_trees import REPO, build_trees, paper_spec, tiny_models
from iqa_store import api
from iqa_store.pipeline import Pipeline, run_pipeline
from iqa_store.store import FeatureStore

ARTIFACTS = Path(os.environ.get("IQA_TEST_ARTIFACTS", REPO / "test-artifacts"))


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None  # playwright's own download, if any


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, tiny_clip_env: None) -> Any:
    """QualiCLIP's pipeline on two trees: its tables and its levels figures (PNG data URIs)."""
    base = tmp_path_factory.mktemp("html")
    trees = build_trees(base / "data")
    spec = paper_spec("qualiclip", trees, tiny_models(base, transformers_models=False), base,
                      datasets=["clive", "kadid10k"])
    store = FeatureStore(base / "store")
    run_pipeline(Pipeline.load(spec), store, device="cpu", workers=0, progress=False, log=lambda line: None)
    return api.report(spec, store=store)


def test_page_renders_offline_in_headless_chromium(report: Any) -> None:
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    images = [p for f in report.figures for p in f.files if p.suffix == ".png"]
    assert images, "the report should have figures to show"
    with playwright.sync_playwright() as driver:
        try:
            browser = driver.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        except Exception as error:  # no browser binary here: say which and why
            pytest.skip(f"no headless Chromium on this machine ({type(error).__name__}: {str(error).splitlines()[0]}); "
                        "install it (apt-get install chromium, or playwright install chromium)")
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            errors: list[str] = []
            fetched: list[str] = []
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("request", lambda request: fetched.append(request.url))
            page.goto(report.html.resolve().as_uri(), wait_until="load")
            assert errors == []
            assert [url for url in fetched if not url.startswith(("file:", "data:"))] == []
            assert page.locator("table[data-table]").count() == len(report.tables) + 1  # + the comparisons
            for table in report.tables:
                rows = page.locator(f'table[data-table="{table.table.id}"] tbody tr')
                assert rows.count() == len(table.table.rows)
                assert page.locator(f'table[data-table="{table.table.id}"] thead th').count() == len(table.table.columns) + 1
            widths = page.eval_on_selector_all("figure img", "images => images.map(i => i.complete ? i.naturalWidth : 0)")
            assert len(widths) == len(images) and all(width > 100 for width in widths)  # every data URI decoded
            assert "paper 0.815" in page.inner_text('table[data-table="table1"]')  # a published value beside ours
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shot = ARTIFACTS / "report_html.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
        finally:
            browser.close()


def test_page_is_self_contained(report: Any) -> None:
    text = report.html.read_text()
    assert "<script" not in text and "<link" not in text and "http://" not in text and "https://" not in text
    assert text.count("data:image/png;base64,") == sum(p.suffix == ".png" for f in report.figures for p in f.files)
