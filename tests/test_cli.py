"""The command line: help texts, lazy imports, JSON output, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from conftest import write_images
from iqa_store.cli import COMMANDS, cli
from iqa_store.datasets import load_manifest
from iqa_store.store import FeatureStore
from iqa_store.store.transfer import import_feature_set, imported_identity

CLI = str(Path(sys.executable).parent / "iqa-store")


@pytest.fixture()
def filled_store(tmp_path: Path) -> tuple[Path, str, str]:
    """A store with one complete set (one image failed) and one partial set."""
    root = tmp_path / "data"
    names = write_images(root, 6, size=(16, 16))
    pd.DataFrame({"path": names, "mos": np.arange(6.0)}).to_csv(root / "labels.csv", index=False)
    manifest = load_manifest("csv", root, labels="labels.csv", dataset_name="toy")
    store = FeatureStore(tmp_path / "S", chunk_bytes=4 * 4 * 4)
    np.save(tmp_path / "f.npy", np.arange(20, dtype=np.float32).reshape(5, 4))
    (tmp_path / "f.ids.txt").write_text("\n".join(names[:5]) + "\n")  # the sixth image is missing
    complete = import_feature_set(store, tmp_path / "f.npy", manifest, "feat")
    partial, _ = store.open_or_create(manifest, imported_identity(name="other", source_sha256="0", source_dim=4))
    return store.root, complete.name, partial.name


def test_every_command_has_help_with_an_example() -> None:
    runner = CliRunner()
    top = runner.invoke(cli, ["--help"])
    assert top.exit_code == 0 and "Example" in top.output
    assert set(COMMANDS) >= {"extract", "fit", "run", "ls", "show", "rm", "gc", "export", "import", "distortions",
                             "datasets", "splits", "pretrain", "train"}
    for name in COMMANDS:
        assert name in top.output
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert f"Usage: cli {name}" in result.output or "Usage:" in result.output
        assert "Example" in result.output and "iqa-store " + name in result.output, (name, result.output)


def test_help_and_ls_do_not_import_torch(tmp_path: Path) -> None:
    code = ("import sys\n"
            "from click.testing import CliRunner\n"
            "from iqa_store.cli import cli\n"
            "for args in (['--help'], ['extract', '--help'], ['ls', '--store', sys.argv[1]]):\n"
            "    result = CliRunner().invoke(cli, args)\n"
            "    assert result.exit_code == 0, result.output\n"
            "    print('torch' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "S")], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False", "False"]


def test_ls_and_show_as_json(filled_store: tuple[Path, str, str]) -> None:
    root, complete, partial = filled_store
    runner = CliRunner()
    result = runner.invoke(cli, ["ls", "--store", str(root), "--format", "json"])
    assert result.exit_code == 0, result.output
    listing = json.loads(result.stdout)
    assert listing["store"] == str(root) and listing["encoders"] == []
    rows = {s["name"]: s for s in listing["feature_sets"]}
    assert set(rows) == {complete, partial}
    assert rows[complete]["state"] == "complete" and rows[complete]["failed"] == 1 and rows[complete]["rows"] == 6
    assert rows[partial]["state"] == "partial 0/2 chunks" and rows[partial]["dim"] == 4
    assert json.loads(runner.invoke(cli, ["ls", "--store", str(root), "--format", "json", "-d", "nope"]).stdout)[
        "feature_sets"] == []

    result = runner.invoke(cli, ["show", complete, "--store", str(root), "--format", "json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["name"] == complete and info["complete"] is True and info["chunks"] == "2/2"
    assert info["counts"] == {"pending": 0, "done": 5, "failed": 1}
    assert info["failures"] == {"img005.jpg": "not in imported file f.npy"}
    assert info["attributes"]["extractor"] == "feat" and info["attributes"]["dataset"] == "toy"

    text = runner.invoke(cli, ["show", complete.rsplit("/", 1)[0] + "/" + complete[-16:-8], "--store", str(root)])
    assert text.exit_code == 0 and f"name: {complete}" in text.stdout
    assert "failed img005.jpg: not in imported file f.npy" in text.stdout


@pytest.mark.parametrize("name, message", [("toy/feat/ffff", "no feature set 'toy/feat/ffff'"),
                                           ("feat", "must look like DATASET/EXTRACTOR/FINGERPRINT")])
def test_unknown_feature_set_is_one_line_exit_2(filled_store: tuple[Path, str, str], name: str, message: str) -> None:
    root, _, _ = filled_store
    for command in (["show", name], ["rm", name, "--yes"], ["export", name, "out.h5"]):
        result = CliRunner().invoke(cli, [*command, "--store", str(root)])
        assert result.exit_code == 2, (command, result.output)
        assert result.stdout == "" and result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith("error: ") and message in result.stderr


def test_unknown_name_in_a_real_process(filled_store: tuple[Path, str, str]) -> None:
    root, _, _ = filled_store
    result = subprocess.run([CLI, "show", "toy/nothing/123", "--store", str(root)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == f"error: no feature set 'toy/nothing/123' in {root}\n"


def test_unknown_model_and_dataset_are_one_line_errors(tmp_path: Path, image_dataset: Path) -> None:
    base = ["extract", "-d", "csv", "--root", str(image_dataset), "-o", "labels=labels.csv", "--device", "cpu",
            "--store", str(tmp_path / "S")]
    result = CliRunner().invoke(cli, [*base, "--model", "no-such-model"])
    assert result.exit_code == 2 and result.stderr.startswith("error: unknown extractor 'no-such-model'")
    assert result.stderr.count("\n") == 1 and "clip-vitb16" in result.stderr
    result = CliRunner().invoke(cli, ["extract", "--model", "brisque", "-d", "nodata", "--store", str(tmp_path / "S")])
    assert result.exit_code == 2 and result.stderr.startswith("error: unknown dataset 'nodata'")
    result = CliRunner().invoke(cli, [*base, "--model", "clip-vitb16", "-o", "labels"])
    assert result.exit_code == 2 and "KEY=VALUE" in result.output
