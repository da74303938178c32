"""`iqa-store datasets list` and `iqa-store datasets verify` on miniature official trees."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_dataset_kadid import ROWS, build_release

from iqa_store.cli import cli
from iqa_store.datasets import DATASETS
from iqa_store.datasets.kadid import KADID10k
from iqa_store.datasets.official import Published
from iqa_store.datasets.verify import verify_dataset

OFFICIAL = ["bid", "cid2013", "clive", "csiq", "flive", "kadid10k", "koniq", "live", "spaq", "tid2013"]


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


@pytest.fixture
def miniature_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The miniature tree's counts stand in for the published ones (5 images from 3 references)."""
    monkeypatch.setattr(KADID10k, "published", Published(len(ROWS), "MOS 1-5", references=3))


def test_list_names_every_official_dataset_with_count_scale_and_citation() -> None:
    code, output = run("datasets", "list", "--format", "json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(output)}
    assert set(OFFICIAL) <= set(rows)
    expected = {"koniq": 10073, "clive": 1162, "spaq": 11125, "cid2013": 474, "flive": 39810, "bid": 585,
                "kadid10k": 10125, "csiq": 866, "live": 779, "tid2013": 3000}
    assert {name: rows[name]["images"] for name in expected} == expected
    assert {name: rows[name]["references"] for name in ("kadid10k", "csiq", "live", "tid2013")} == \
        {"kadid10k": 81, "csiq": 30, "live": 29, "tid2013": 25}
    for name in OFFICIAL:
        assert rows[name]["scale"] and rows[name]["citation"] and rows[name]["layout"]
        assert rows[name]["env_var"] == DATASETS.get(name).env_var
    code, text = run("datasets", "list")
    assert code == 0 and "kadid10k: KADID-10k" in text and "--root DIR or $IQA_KADID_ROOT" in text


def test_verify_a_good_tree(tmp_path: Path, miniature_counts: None) -> None:
    root = build_release(tmp_path)
    code, output = run("datasets", "verify", "kadid10k", "--root", str(root))
    assert code == 0, output
    assert f"kadid10k at {root}: 5 images, 8 files checked, 0 problem(s)" in output


def test_verify_names_a_missing_file_a_corrupt_file_and_a_count_mismatch(tmp_path: Path,
                                                                         miniature_counts: None) -> None:
    root = build_release(tmp_path)
    (root / "images" / "I02_03_02.png").unlink()
    (root / "images" / "I01_01_05.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    truncated = root / "images" / "I03.png"
    truncated.write_bytes(truncated.read_bytes()[:60])
    with (root / "dmos.csv").open("a") as handle:  # a sixth row: 6 listed where 5 are published
        handle.write("I02_11_01.png,I02.png,3.0,0.3\n")
    from iqa_store.datasets.testing import write_image
    write_image(root / "images" / "I02_11_01.png")

    report = verify_dataset("kadid10k", root)
    problems = {(p.kind, Path(p.where).name if p.kind in ("missing", "corrupt") else p.where) for p in report.problems}
    assert problems == {("missing", "I02_03_02.png"), ("corrupt", "I01_01_05.png"), ("corrupt", "I03.png"),
                        ("count", "images")}
    count = next(p for p in report.problems if p.kind == "count")
    assert count.detail == "6 listed, 5 published"

    code, output = run("datasets", "verify", "kadid10k", "--root", str(root), "--format", "json")
    assert code == 1
    data = json.loads(output)
    assert data["ok"] is False and len(data["problems"]) == 4
    code, text = run("datasets", "verify", "kadid10k", "--root", str(root))
    assert code == 1
    assert f"missing: {root / 'images' / 'I02_03_02.png'}: file not found" in text
    assert "count: images: 6 listed, 5 published" in text


def test_verify_reports_reference_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(KADID10k, "published", Published(len(ROWS), "MOS 1-5", references=81))
    report = verify_dataset("kadid10k", build_release(tmp_path))
    assert [str(p) for p in report.problems] == ["count: reference images: 3 listed, 81 published"]


@pytest.mark.parametrize("score, message", [("high", "dmos 'high' is not a number"),
                                            ("6.5", r"dmos (a MOS, higher is better) 6.5 outside 1-5")])
def test_verify_reports_unreadable_labels_and_mos_out_of_range(tmp_path: Path, score: str, message: str) -> None:
    root = build_release(tmp_path)
    (root / "dmos.csv").write_text(f"dist_img,ref_img,dmos,var\nI01_01_01.png,I01.png,{score},0.1\n")
    code, output = run("datasets", "verify", "kadid10k", "--root", str(root))
    assert code == 1
    assert "labels: " in output and f"dmos.csv, line 2 (I01_01_01.png): {message}" in output


def test_verify_checks_official_split_counts(tmp_path: Path) -> None:
    from test_dataset_flive import build_release as build_flive
    report = verify_dataset("flive", build_flive(tmp_path / "database"))
    assert sorted(str(p) for p in report.problems) == ["count: images: 6 listed, 39810 published",
                                                       "count: official test split: 2 listed, 1827 published"]


def test_verify_without_root_names_the_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IQA_TID2013_ROOT", raising=False)
    code, output = run("datasets", "verify", "tid2013")
    assert code == 1 and "pass --root DIR or set IQA_TID2013_ROOT" in output


def test_help_of_the_group_and_commands() -> None:
    for args in (["datasets", "--help"], ["datasets", "list", "--help"], ["datasets", "verify", "--help"]):
        code, output = run(*args)
        assert code == 0 and "Usage:" in output
