"""The generic CSV adapter: options, direction flip, precise errors, and path-traversal attacks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from iqa_store.datasets import DATASETS, ManifestError, load_manifest
from iqa_store.datasets.csv_folder import CsvDataset, read_label_csv
from iqa_store.datasets.testing import DatasetAdapterTests, write_image

IMAGES = ["images/a.jpg", "images/b.jpg", "images/sub/c.png", "d.jpg", "images/ref/e.bmp"]


def build_tree(root: Path, images=IMAGES) -> Path:
    for seed, name in enumerate(images):
        write_image(root / name, seed=seed)
    return root


def write_csv(path: Path, lines: list[str], newline: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((newline.join(lines) + newline).encode())
    return path


class TestCsvHigherIsBetter(DatasetAdapterTests):
    adapter_cls = CsvDataset
    expected_len = 5
    best_id, worst_id = "images/sub/c.png", "d.jpg"
    expected_splits = {"train": 3, "val": 1, "test": 1}

    @pytest.fixture
    def adapter(self) -> CsvDataset:
        return CsvDataset(labels="labels.csv", std_column="std", reference_column="ref", split_column="split")

    @pytest.fixture
    def dataset_root(self, tmp_path: Path) -> Path:
        root = build_tree(tmp_path / "data")
        write_csv(root / "labels.csv", [
            "path,mos,std,ref,split",
            "images/a.jpg,3.5,0.4,r1,train",
            "images/b.jpg,2.0,,r1,Training",
            "images/sub/c.png,4.5,0.2,r2,validation",
            "./d.jpg,1.25,0.9,,test",
            "images\\ref\\e.bmp,3.0,0.1,r2,train",
        ])
        return root


class TestCsvLowerIsBetterCustomColumns(DatasetAdapterTests):
    """A DMOS-style file (lower is better) kept outside the root, CRLF line ends, a quoted path."""

    adapter_cls = CsvDataset
    expected_len = 3
    expected_dataset = "my-dmos"
    best_id, worst_id = "images/a.jpg", "images/b.jpg"

    @pytest.fixture
    def adapter(self, tmp_path: Path) -> CsvDataset:
        return CsvDataset(labels=str(tmp_path / "elsewhere" / "dmos.csv"), path_column="dist_img",
                          mos_column="dmos", higher_is_better=False, mos_range=(0.0, 100.0),
                          dataset_name="my-dmos")

    @pytest.fixture
    def dataset_root(self, tmp_path: Path) -> Path:
        root = build_tree(tmp_path / "data", ["images/a.jpg", "images/b.jpg", "images/x, y.jpg"])
        write_csv(tmp_path / "elsewhere" / "dmos.csv", [
            "dist_img,dmos",
            "images/a.jpg,10",
            "images/b.jpg,80",
            '"images/x, y.jpg",35.5',
        ], newline="\r\n")
        return root


# --- values ------------------------------------------------------------------------------------


def test_ids_paths_and_values(tmp_path: Path) -> None:
    root = build_tree(tmp_path)
    write_csv(root / "labels.csv", ["path,mos,std", "images/a.jpg,3.5,0.4", "./d.jpg,1.25,",
                                    "images\\sub\\c.png,4.5,0.2"])
    manifest = CsvDataset(labels="labels.csv", std_column="std").manifest(root)
    assert manifest.ids == ["images/a.jpg", "d.jpg", "images/sub/c.png"]
    assert manifest.table["path"].tolist() == manifest.ids
    assert manifest.mos.tolist() == [3.5, 1.25, 4.5]
    assert manifest.mos_range == (1.25, 4.5)
    assert manifest.table["mos_std"].iloc[0] == 0.4 and manifest.table["mos_std"].isna().iloc[1]
    assert manifest.dataset == "csv" and manifest.official_split is None and manifest.reference_ids is None


def test_lower_is_better_flips_inside_the_scale(tmp_path: Path) -> None:
    root = build_tree(tmp_path)
    write_csv(root / "l.csv", ["path,dmos", "images/a.jpg,0.1", "images/b.jpg,0.7", "d.jpg,0.4"])
    manifest = CsvDataset(labels="l.csv", mos_column="dmos", higher_is_better=False).manifest(root)
    assert manifest.mos_range == (0.1, 0.7)
    assert manifest.mos == pytest.approx([0.7, 0.1, 0.4])
    assert manifest.table["mos_original"].tolist() == [0.1, 0.7, 0.4]
    assert manifest.original_direction == "lower_better"
    given = CsvDataset(labels="l.csv", mos_column="dmos", higher_is_better=False, mos_range=[0, 1]).manifest(root)
    assert given.mos_range == (0.0, 1.0)
    assert given.mos == pytest.approx([0.9, 0.3, 0.6])


def test_two_csv_datasets_coexist_under_their_names(tmp_path: Path) -> None:
    root = build_tree(tmp_path)
    write_csv(root / "one.csv", ["path,mos", "images/a.jpg,1", "images/b.jpg,2"])
    write_csv(root / "two.csv", ["path,mos", "d.jpg,5", "images/a.jpg,3"])
    one = load_manifest("csv", root, labels="one.csv", dataset_name="one")
    two = load_manifest("csv", root, labels="two.csv", dataset_name="two")
    assert (one.dataset, two.dataset) == ("one", "two")
    assert one.manifest_hash() != two.manifest_hash()
    assert DATASETS.get("csv") is CsvDataset


def test_bom_blank_lines_and_trailing_empty_fields(tmp_path: Path) -> None:
    root = build_tree(tmp_path)
    path = root / "l.csv"
    path.write_bytes("\ufeffpath,mos\n\nimages/a.jpg,1,,\n,\nd.jpg,2\n".encode())
    assert CsvDataset(labels="l.csv").manifest(root).ids == ["images/a.jpg", "d.jpg"]
    table = read_label_csv(path)
    assert table.columns == ["path", "mos"]
    assert [line for line, _ in table.rows] == [3, 5]


def test_symlink_inside_the_root_is_allowed_and_keeps_its_name(tmp_path: Path) -> None:
    root = build_tree(tmp_path)
    os.symlink(root / "images" / "a.jpg", root / "alias.jpg")
    write_csv(root / "l.csv", ["path,mos", "alias.jpg,1", "images/b.jpg,2"])
    assert CsvDataset(labels="l.csv").manifest(root).ids == ["alias.jpg", "images/b.jpg"]


def test_missing_image_files_are_not_a_manifest_error(tmp_path: Path) -> None:
    root = build_tree(tmp_path)
    write_csv(root / "l.csv", ["path,mos", "images/a.jpg,1", "images/gone.jpg,2"])
    manifest = CsvDataset(labels="l.csv").manifest(root)
    assert [p.is_file() for p in manifest.paths] == [True, False]


# --- errors ------------------------------------------------------------------------------------


def read(root: Path, lines: list[str], **options) -> None:
    write_csv(root / "labels.csv", lines)
    CsvDataset(labels="labels.csv", **options).manifest(root)


def test_labels_file_missing(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=f"label file {tmp_path / 'nope.csv'} not found"):
        CsvDataset(labels="nope.csv").manifest(tmp_path)


def test_missing_column_lists_available_columns(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"labels.csv: missing column\(s\) \['mos'\]; available columns: "
                                            r"\['path', 'score'\]"):
        read(tmp_path, ["path,score", "a.jpg,1"])


def test_missing_optional_column_is_named(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"missing column\(s\) \['sd'\]"):
        read(tmp_path, ["path,mos", "a.jpg,1"], std_column="sd")


@pytest.mark.parametrize("value, message", [
    ("", "empty score in column 'mos'"),
    ("nan", "score in column 'mos' is 'nan', not a finite number"),
    ("inf", "score in column 'mos' is 'inf', not a finite number"),
    ("good", "score in column 'mos' 'good' is not a number"),
])
def test_bad_mos_names_file_line_and_image(tmp_path: Path, value: str, message: str) -> None:
    with pytest.raises(ManifestError) as error:
        read(tmp_path, ["path,mos", "a.jpg,1", "", f"b.jpg,{value}"])
    assert str(error.value) == f"{tmp_path / 'labels.csv'}, line 4 (b.jpg): {message}"


def test_bad_std(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"labels.csv, line 2 \(a.jpg\): negative std -1"):
        read(tmp_path, ["path,mos,sd", "a.jpg,1,-1"], std_column="sd")
    with pytest.raises(ManifestError, match=r"labels.csv, line 3 \(b.jpg\): std in column 'sd' 'x' is not"):
        read(tmp_path, ["path,mos,sd", "a.jpg,1,0.5", "b.jpg,2,x"], std_column="sd")


def test_duplicate_paths_after_normalisation(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"labels.csv, line 4: duplicate image path 'images/a.jpg' "
                                            r"\(first listed on line 2\)"):
        read(tmp_path, ["path,mos", "images/a.jpg,1", "b.jpg,2", "./images//a.jpg,3"])


def test_empty_path(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="labels.csv, line 3: empty image path"):
        read(tmp_path, ["path,mos", "a.jpg,1", " ,2"])


def test_field_count_mismatch(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="labels.csv, line 3: 1 field"):
        read(tmp_path, ["path,mos", "a.jpg,1", "b.jpg"])


def test_no_rows(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="labels.csv: no data rows"):
        read(tmp_path, ["path,mos"])


def test_score_outside_given_range(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"line 3 \(b.jpg\): score 7 is outside mos_range \(0.0, 5.0\)"):
        read(tmp_path, ["path,mos", "a.jpg,1", "b.jpg,7"], mos_range=(0, 5))


@pytest.mark.parametrize("bad", [(5, 1), (1, 1), ("a", 2), (1,)])
def test_invalid_mos_range_option(tmp_path: Path, bad) -> None:
    with pytest.raises(ManifestError, match="mos_range"):
        read(tmp_path, ["path,mos", "a.jpg,1"], mos_range=bad)


def test_unknown_split_value(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"line 3 \(b.jpg\): unknown split 'holdout'"):
        read(tmp_path, ["path,mos,s", "a.jpg,1,train", "b.jpg,2,holdout"], split_column="s")


def test_invalid_dataset_name(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="dataset_name '../x'"):
        read(tmp_path, ["path,mos", "a.jpg,1"], dataset_name="../x")


def test_encoding_error_is_named(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_bytes("path,mos\nbild-\u00e4.jpg,1\n".encode("latin-1"))
    with pytest.raises(ManifestError, match=r"labels.csv, line 2: byte 0xe4 is not utf-8-sig text"):
        CsvDataset(labels="labels.csv").manifest(tmp_path)
    manifest = CsvDataset(labels="labels.csv", encoding="latin-1").manifest(tmp_path)
    assert manifest.ids == ["bild-\u00e4.jpg"]


# --- a label file can never make us read outside the root ---------------------------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A dataset root, with a real image and a directory of secrets just outside it."""
    build_tree(tmp_path / "root")
    write_image(tmp_path / "x.jpg")
    write_image(tmp_path / "secrets" / "s.jpg")
    return tmp_path


@pytest.mark.parametrize("attack, reason", [
    ("../x.jpg", "leads outside the dataset root"),
    ("images/../../x.jpg", "leads outside the dataset root"),
    ("..\\x.jpg", "leads outside the dataset root"),
    ("/etc/passwd", "absolute image path '/etc/passwd' is not allowed"),
    ("C:/Windows/win.ini", "absolute image path"),
    ("..", "leads outside the dataset root"),
    (".", "does not name a file inside the dataset root"),
    ("a\x00.jpg", "NUL byte"),
])
def test_path_traversal_is_refused(outside: Path, attack: str, reason: str) -> None:
    root = outside / "root"
    write_csv(root / "labels.csv", ["path,mos", "images/a.jpg,1", f'"{attack}",2'])
    with pytest.raises(ManifestError) as error:
        CsvDataset(labels="labels.csv").manifest(root)
    assert str(error.value).startswith(f"{root / 'labels.csv'}, line 3: ")
    assert reason in str(error.value)


def test_absolute_path_inside_the_root_is_refused_too(outside: Path) -> None:
    root = outside / "root"
    with pytest.raises(ManifestError, match="absolute image path"):
        read(root, ["path,mos", f"{root / 'images' / 'a.jpg'},1"])


@pytest.mark.parametrize("link, target, row", [
    ("evil.jpg", "x.jpg", "evil.jpg"),  # a file symlink out
    ("images/leak", "secrets", "images/leak/s.jpg"),  # a directory symlink out
    ("images/passwd", "/etc/passwd", "images/passwd"),  # an absolute symlink
])
def test_symlink_leading_outside_is_refused(outside: Path, link: str, target: str, row: str) -> None:
    root = outside / "root"
    os.symlink(target if target.startswith("/") else outside / target, root / link)
    with pytest.raises(ManifestError, match=rf"labels.csv, line 2: image path '{row}' leads outside"):
        read(root, ["path,mos", f"{row},1"])


def test_root_given_through_a_symlink_still_works(outside: Path) -> None:
    alias = outside / "alias"
    os.symlink(outside / "root", alias)
    write_csv(alias / "labels.csv", ["path,mos", "images/a.jpg,1"])
    manifest = CsvDataset(labels="labels.csv").manifest(alias)
    assert manifest.ids == ["images/a.jpg"] and manifest.paths[0].is_file()
