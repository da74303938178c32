"""KonIQ-10k adapter on miniature copies of the official release."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from iqa_store.datasets import DATASETS, ManifestError, load_manifest
from iqa_store.datasets.koniq import KonIQ
from iqa_store.datasets.testing import DatasetAdapterTests, write_image

SCORES = "koniq10k_scores_and_distributions.csv"
SETS = "koniq10k_distributions_sets.csv"

# image_name, c1..c5 (counts), c_total, MOS (1-5), SD, MOS_zscore (0-100): values shaped like the release
ROWS = [
    ("10004473376.jpg", 0, 0, 25, 73, 7, 105, 3.828571429, 0.527330664, 77.38348655),
    ("10007357496.jpg", 0, 3, 45, 47, 1, 96, 3.479166667, 0.580826315, 68.5672064),
    ("10007903636.jpg", 1, 0, 20, 73, 10, 104, 3.866666667, 0.55703245, 78.34343318),
    ("10009096245.jpg", 18, 53, 31, 2, 0, 104, 2.163461538, 0.739217631, 24.17452549),
    ("100117038.jpg", 0, 1, 7, 59, 38, 105, 4.276190476, 0.641419736, 88.51762563),
    ("100163024.jpg", 1, 2, 38, 60, 3, 104, 3.596153846, 0.610624013, 71.3125567),
]
SETS_OF = {"10004473376.jpg": "training", "10007357496.jpg": "training", "10007903636.jpg": "training",
           "10009096245.jpg": "validation", "100117038.jpg": "test", "100163024.jpg": "test"}
HEADER = ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "MOS_zscore"]


def scores_text(rows=ROWS, header=HEADER, quoted: bool = True) -> str:
    if quoted:  # the release quotes the header and the names
        lines = [",".join(f'"{h}"' for h in header)]
        lines += [",".join([f'"{r[0]}"'] + [str(v) for v in r[1:]]) for r in rows]
    else:
        lines = [",".join(header)] + [",".join(str(v) for v in r) for r in rows]
    return "\n".join(lines) + "\n"


def sets_text(rows=ROWS, sets=SETS_OF) -> str:
    # c1..c5 as fractions, MOS and SD on the 0-100 z-score scale: nothing here may reach the manifest
    lines = ["image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,set"]
    for name, *counts, total, mos, sd, zscore in rows:
        fractions = [c / total for c in counts]
        lines.append(",".join([name, *(f"{f:.9f}" for f in fractions), str(total), str(zscore),
                               str(sd * 25), sets[name]]))
    return "\n".join(lines) + "\n"


def build_release(base: Path, *, resolution: str = "1024x768", quoted: bool = True, with_sets: bool = False,
                  rows=ROWS) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    (base / SCORES).write_text(scores_text(rows, quoted=quoted))
    size = (16, 12) if resolution == "1024x768" else (8, 6)
    for seed, row in enumerate(rows):
        write_image(base / resolution / row[0], size=size, seed=seed)
    if with_sets:
        (base / SETS).write_text(sets_text(rows))
    return base


class TestKonIQQuotedHeader(DatasetAdapterTests):
    adapter_cls = KonIQ
    expected_len = len(ROWS)
    best_id, worst_id = "100117038.jpg", "10009096245.jpg"

    @pytest.fixture
    def dataset_root(self, tmp_path: Path) -> Path:
        return build_release(tmp_path / "koniq")


class TestKonIQNestedWithOfficialSplit(DatasetAdapterTests):
    """Unpacked with an extra koniq10k/ folder, unquoted header, the sets file beside it."""

    adapter_cls = KonIQ
    expected_len = len(ROWS)
    best_id, worst_id = "100117038.jpg", "10009096245.jpg"
    expected_splits = {"train": 3, "val": 1, "test": 2}

    @pytest.fixture
    def dataset_root(self, tmp_path: Path) -> Path:
        build_release(tmp_path / "root" / "koniq10k", quoted=False, with_sets=True)
        return tmp_path / "root"


class TestKonIQHalfResolution(DatasetAdapterTests):
    adapter_cls = KonIQ
    expected_len = len(ROWS)
    best_id, worst_id = "100117038.jpg", "10009096245.jpg"

    @pytest.fixture
    def adapter(self) -> KonIQ:
        return KonIQ(resolution="512x384")

    @pytest.fixture
    def dataset_root(self, tmp_path: Path) -> Path:
        return build_release(tmp_path / "koniq", resolution="512x384")


# --- values ------------------------------------------------------------------------------------


def test_values_come_from_the_1_to_5_mos_column_never_the_sets_file(tmp_path: Path) -> None:
    root = build_release(tmp_path, with_sets=True)
    manifest = KonIQ().manifest(root)
    expected = {r[0]: r for r in ROWS}
    assert manifest.ids == [r[0] for r in ROWS]
    assert manifest.mos_range == (1.0, 5.0)
    assert manifest.original_direction == "higher_better"
    for image_id, mos, std, original, path in manifest.table[["image_id", "mos", "mos_std", "mos_original",
                                                              "path"]].itertuples(index=False):
        assert mos == pytest.approx(expected[image_id][7])
        assert original == pytest.approx(expected[image_id][7])
        assert std == pytest.approx(expected[image_id][8])
        assert path == f"1024x768/{image_id}"
    assert dict(zip(manifest.ids, manifest.official_split)) == {
        k: {"training": "train", "validation": "val", "test": "test"}[v] for k, v in SETS_OF.items()}
    assert manifest.info["split_file"] == SETS
    assert manifest.info["resolution"] == "1024x768"


def test_nested_paths_stay_relative_to_the_given_root(tmp_path: Path) -> None:
    build_release(tmp_path / "koniq10k")
    manifest = KonIQ().manifest(tmp_path)
    assert manifest.table["path"].iloc[0] == "koniq10k/1024x768/10004473376.jpg"
    assert manifest.info["label_file"] == f"koniq10k/{SCORES}"


def test_image_folder_at_root_with_labels_one_level_down(tmp_path: Path) -> None:
    build_release(tmp_path / "koniq10k")
    (tmp_path / "koniq10k" / "1024x768").rename(tmp_path / "1024x768")
    manifest = KonIQ().manifest(tmp_path)
    assert manifest.table["path"].iloc[0] == "1024x768/10004473376.jpg"
    assert all(p.is_file() for p in manifest.paths)


def test_sets_file_in_root_while_release_is_nested(tmp_path: Path) -> None:
    build_release(tmp_path / "koniq10k")
    (tmp_path / SETS).write_text(sets_text())
    assert KonIQ().manifest(tmp_path).official_split.count("train") == 3


def test_missing_image_files_are_not_a_manifest_error(tmp_path: Path) -> None:
    root = build_release(tmp_path)
    (root / "1024x768" / ROWS[2][0]).unlink()
    manifest = KonIQ().manifest(root)
    assert len(manifest) == len(ROWS)
    assert [p.is_file() for p in manifest.paths].count(False) == 1


def test_load_manifest_through_the_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = build_release(tmp_path / "k", resolution="512x384")
    assert DATASETS.get("koniq") is KonIQ
    assert len(load_manifest("koniq", root, resolution="512x384")) == len(ROWS)
    monkeypatch.delenv("IQA_KONIQ_ROOT", raising=False)
    with pytest.raises(ManifestError, match="IQA_KONIQ_ROOT"):
        load_manifest("koniq")


# --- errors ------------------------------------------------------------------------------------


def test_no_label_file(tmp_path: Path) -> None:
    write_image(tmp_path / "1024x768" / "a.jpg")
    with pytest.raises(ManifestError, match=f"{SCORES} not found in {tmp_path}"):
        KonIQ().manifest(tmp_path)


def test_two_candidate_label_files_are_ambiguous(tmp_path: Path) -> None:
    build_release(tmp_path / "a")
    build_release(tmp_path / "b")
    with pytest.raises(ManifestError, match=r"several folders.*'a/koniq10k.*'b/koniq10k"):
        KonIQ().manifest(tmp_path)


def test_image_folder_missing_says_what_is_expected_where(tmp_path: Path) -> None:
    (tmp_path / SCORES).write_text(scores_text())
    with pytest.raises(ManifestError) as error:
        KonIQ().manifest(tmp_path)
    message = str(error.value)
    assert f"{tmp_path / '1024x768'}" in message and "koniq10k_1024x768.zip" in message


def test_image_folder_of_the_other_resolution_is_suggested(tmp_path: Path) -> None:
    root = build_release(tmp_path, resolution="512x384")
    with pytest.raises(ManifestError, match="found 512x384/ instead: pass resolution='512x384'"):
        KonIQ().manifest(root)


def test_unknown_resolution(tmp_path: Path) -> None:
    root = build_release(tmp_path)
    with pytest.raises(ManifestError, match="resolution '640x480'"):
        KonIQ(resolution="640x480").manifest(root)


def test_missing_column_names_file_and_available_columns(tmp_path: Path) -> None:
    root = build_release(tmp_path)
    header = [h for h in HEADER if h != "SD"]
    rows = [r[:8] + r[9:] for r in ROWS]
    (root / SCORES).write_text(scores_text(rows, header))
    with pytest.raises(ManifestError, match=rf"{SCORES}: missing column\(s\) \['SD'\]; available columns: "
                                            r"\['image_name', 'c1'"):
        KonIQ().manifest(root)


def test_non_numeric_mos_names_line_and_image(tmp_path: Path) -> None:
    root = build_release(tmp_path)
    rows = list(ROWS)
    rows[2] = rows[2][:7] + ("n/a",) + rows[2][8:]
    (root / SCORES).write_text(scores_text(rows))
    with pytest.raises(ManifestError, match=rf"{SCORES}, line 4 \(10007903636.jpg\): MOS 'n/a' is not a number"):
        KonIQ().manifest(root)


def test_empty_mos(tmp_path: Path) -> None:
    root = build_release(tmp_path)
    rows = list(ROWS)
    rows[0] = rows[0][:7] + ("",) + rows[0][8:]
    (root / SCORES).write_text(scores_text(rows))
    with pytest.raises(ManifestError, match=rf"{SCORES}, line 2 \(10004473376.jpg\): empty MOS"):
        KonIQ().manifest(root)


def test_mos_outside_1_to_5_is_an_error_with_a_scale_hint(tmp_path: Path) -> None:
    root = build_release(tmp_path)
    rows = [r[:7] + (r[9],) + r[8:] for r in ROWS]  # the z-score put into the MOS column
    (root / SCORES).write_text(scores_text(rows))
    with pytest.raises(ManifestError, match=rf"{SCORES}, line 2 \(10004473376.jpg\): MOS 77.3835 outside 1-5 "
                                            r"\(that looks like the 0-100 z-score scale"):
        KonIQ().manifest(root)


def test_duplicate_image_names(tmp_path: Path) -> None:
    root = build_release(tmp_path)
    (root / SCORES).write_text(scores_text(ROWS + [ROWS[1]]))
    with pytest.raises(ManifestError, match=rf"{SCORES}, line 8: duplicate image_name '10007357496.jpg' "
                                            r"\(first on line 3\)"):
        KonIQ().manifest(root)


def test_image_name_cannot_leave_the_image_folder(tmp_path: Path) -> None:
    root = build_release(tmp_path / "root")
    write_image(tmp_path / "secret.jpg")
    rows = [("../../secret.jpg",) + ROWS[0][1:]] + ROWS[1:]
    (root / SCORES).write_text(scores_text(rows))
    with pytest.raises(ManifestError, match=rf"{SCORES}, line 2: image path '../../secret.jpg' leads outside"):
        KonIQ().manifest(root)


def test_sets_file_with_a_different_image_list_names_the_names(tmp_path: Path) -> None:
    root = build_release(tmp_path)
    sets = sets_text().replace("100163024.jpg", "999.jpg")
    (root / SETS).write_text(sets)
    with pytest.raises(ManifestError) as error:
        KonIQ().manifest(root)
    message = str(error.value)
    assert SCORES in message and SETS in message
    assert f"missing from {SETS}: ['100163024.jpg']" in message
    assert f"in {SETS} not in {SCORES}: ['999.jpg']" in message


def test_sets_file_with_an_unassigned_image(tmp_path: Path) -> None:
    root = build_release(tmp_path)
    (root / SETS).write_text(sets_text().replace(",test\n", ",\n", 1))
    with pytest.raises(ManifestError, match=rf"{SETS}, line 6 \(100117038.jpg\): empty set"):
        KonIQ().manifest(root)


def test_sets_file_with_an_unknown_split_label(tmp_path: Path) -> None:
    root = build_release(tmp_path)
    (root / SETS).write_text(sets_text().replace(",validation", ",holdout"))
    with pytest.raises(ManifestError, match=rf"{SETS}, line 5 \(10009096245.jpg\): unknown split 'holdout'"):
        KonIQ().manifest(root)


def test_sets_file_without_set_column(tmp_path: Path) -> None:
    root = build_release(tmp_path)
    (root / SETS).write_text(sets_text().replace(",set\n", ",split\n", 1))
    with pytest.raises(ManifestError, match=rf"{SETS}: missing column\(s\) \['set'\]"):
        KonIQ().manifest(root)


def test_sets_mos_would_have_been_out_of_range(tmp_path: Path) -> None:
    """Guards the fixture itself: the sets file's MOS really is on the other scale."""
    text = sets_text().splitlines()
    mos = np.array([float(line.split(",")[7]) for line in text[1:]])
    fractions = np.array([[float(v) for v in line.split(",")[1:6]] for line in text[1:]])
    assert (mos > 5).all()
    assert np.allclose(fractions.sum(axis=1), 1.0)
