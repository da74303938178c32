"""Text annotations (iqa_store.texts, `iqa-store annotate`): measures against their definitions,
bins of images made dark, bright, flat, blurred, grey and saturated, degree words of every
synthetic level, the phrase files' sizes, the store round trip and the CLI."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image, ImageEnhance, ImageStat
from scipy import ndimage

from iqa_store import api
from iqa_store.cli import cli
from iqa_store.datasets import load_manifest
from iqa_store.datasets.csiq import DISTORTIONS as CSIQ_DISTORTIONS
from iqa_store.datasets.demo import IMAGES_DIR, PHOTOS
from iqa_store.datasets.levels import KADID_TYPES, TID2013_TYPES
from iqa_store.datasets.live import FOLDERS as LIVE_FOLDERS
from iqa_store.datasets.testing import write_image
from iqa_store.distortions import get_bank
from iqa_store.distortions.banks import BANK_NAMES
from iqa_store.store import FeatureStore
from iqa_store.texts import (APPEARANCE_ATTRIBUTES, TABLE_COLUMNS, TEXT_KINDS, AnnotationSettings, CaptionerError,
                             ImageSet, TransformersCaptioner, annotate, annotation_key, measure_appearance,
                             phrase_book, texts_by_image)
from iqa_store.texts.appearance import brightness, colourfulness, contrast, fish, luma, sharpness, tertile_levels
from iqa_store.texts.wavelet import dwt2

BOOK = phrase_book()


def _photo(name: str) -> np.ndarray:
    return np.asarray(Image.open(IMAGES_DIR / f"{name}.jpg").convert("RGB"))


# ---------------------------------------------------------------------------------------------
# the measures against their definitions


def test_colourfulness_is_hasler_suesstrunk_recomputed_pixel_by_pixel() -> None:
    pixels = np.asarray(Image.open(IMAGES_DIR / "coffee.jpg").convert("RGB").resize((40, 30)), dtype=np.int64)
    rg = [int(r) - int(g) for r, g, _ in pixels.reshape(-1, 3)]
    yb = [(int(r) + int(g)) / 2 - int(b) for r, g, b in pixels.reshape(-1, 3)]
    expected = (math.sqrt(statistics.pvariance(rg) + statistics.pvariance(yb))
                + 0.3 * math.sqrt(statistics.fmean(rg) ** 2 + statistics.fmean(yb) ** 2))
    assert colourfulness(pixels) == pytest.approx(expected, rel=1e-12)
    assert colourfulness(np.repeat(pixels[..., :1], 3, axis=2)) == 0.0  # grey: rg = 0, yb = 0


def test_brightness_and_contrast_are_mean_and_std_of_the_luma() -> None:
    image = Image.open(IMAGES_DIR / "astronaut.jpg").convert("RGB")
    stats = ImageStat.Stat(image.convert("L"))  # Pillow's own BT.601 luma, rounded to integers
    assert brightness(np.asarray(image)) == pytest.approx(stats.mean[0] / 255, abs=0.5 / 255)
    assert contrast(np.asarray(image)) == pytest.approx(stats.stddev[0] / 255, abs=0.5 / 255)


def test_wavelet_equals_pywavelets_bior44() -> None:
    pywt = pytest.importorskip("pywt")
    rng = np.random.default_rng(3)
    for shape in [(17, 23), (64, 48), (9, 40)]:
        image = rng.normal(size=shape)
        ours, theirs = dwt2(image), pywt.dwt2(image, "bior4.4", mode="symmetric")
        np.testing.assert_allclose(ours[0], theirs[0], atol=1e-12)
        for band, reference in zip(ours[1], theirs[1]):
            np.testing.assert_allclose(band, reference, atol=1e-12)


def test_fish_equals_its_definition_on_pywavelets_subbands() -> None:
    pywt = pytest.importorskip("pywt")
    grey = luma(_photo("chelsea"))
    bands = pywt.wavedec2(grey, "bior4.4", mode="symmetric", level=3)  # [cA3, level 3, level 2, level 1]
    expected = 0.0
    for n, (lh, hl, hh) in zip((3, 2, 1), bands[1:]):
        e = [math.log10(1 + float(np.mean(np.square(b)))) for b in (lh, hl, hh)]
        expected += 2 ** (3 - n) * (0.2 * (e[0] + e[1]) / 2 + 0.8 * e[2])
    assert fish(grey) == pytest.approx(expected, rel=1e-12)


def test_fish_falls_with_gaussian_blur() -> None:
    for name in ("astronaut", "rocket"):
        pixels = _photo(name).astype(np.float64)
        scores = [sharpness(ndimage.gaussian_filter(pixels, (sigma, sigma, 0)) if sigma else pixels)
                  for sigma in (0, 0.7, 1.5, 3, 6)]
        assert all(a > b for a, b in zip(scores, scores[1:])), (name, scores)


def test_tertile_rule() -> None:
    values = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0, 4.0, 6.0]
    low, high = np.quantile(values, [1 / 3, 2 / 3])
    assert tertile_levels(values) == ["low" if v < low else "high" if v > high else "medium" for v in values]
    assert tertile_levels(values).count("low") == 3 and tertile_levels(values).count("high") == 3
    assert tertile_levels([2.0]) == ["medium"] and tertile_levels([1.0] * 4) == ["medium"] * 4


# ---------------------------------------------------------------------------------------------
# bins of altered photographs among ordinary ones


def _altered(photo: np.ndarray) -> dict[str, np.ndarray]:
    pixels = photo.astype(np.float64)
    mean = pixels.mean()
    grey = np.repeat(np.round(luma(photo))[..., None], 3, axis=2)
    saturated = np.asarray(ImageEnhance.Color(Image.fromarray(photo)).enhance(4.0))
    return {"dark": pixels * 0.12, "bright": 255 - (255 - pixels) * 0.12, "flat": mean + (pixels - mean) * 0.15,
            "blurred": ndimage.gaussian_filter(pixels, (5, 5, 0)), "grey": grey, "saturated": saturated}


EXPECTED_BINS = {"dark": ("brightness", "low"), "bright": ("brightness", "high"), "flat": ("contrast", "low"),
                 "blurred": ("sharpness", "low"), "grey": ("colourfulness", "low"),
                 "saturated": ("colourfulness", "high")}


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The eight demo photographs, and six altered copies of the coffee photograph."""
    folder = tmp_path_factory.mktemp("mixed")
    for name in PHOTOS:
        Image.fromarray(_photo(name)).save(folder / f"{name}.png")
    for name, pixels in _altered(_photo("coffee")).items():
        Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8)).save(folder / f"altered_{name}.png")
    return folder


def test_altered_photographs_land_in_their_bins(mixed_folder: Path) -> None:
    table = annotate(mixed_folder, AnnotationSettings(kinds=("appearance",)), progress=False)
    appearance = table[table["kind"] == "appearance"]
    assert len(appearance) == 14 * 4 and set(table["kind"]) == {"appearance"}
    level = {(r.image_id, r.attribute): r.level for r in appearance.itertuples()}
    for name, (attribute, expected) in EXPECTED_BINS.items():
        assert level[f"altered_{name}.png", attribute] == expected, (name, attribute)
    for row in appearance.itertuples():  # every text is one of its attribute's and level's phrases
        assert row.text in BOOK.appearance[row.attribute][row.level]
    for attribute in APPEARANCE_ATTRIBUTES:  # tertiles: each level holds about a third
        counts = appearance[appearance["attribute"] == attribute]["level"].value_counts()
        assert set(counts.index) == {"low", "medium", "high"} and counts.max() <= 6, (attribute, counts)


def test_measures_decide_the_bins(mixed_folder: Path) -> None:
    """The table's levels are the tertiles of the measures of the images (decoded independently)."""
    table = annotate(mixed_folder, AnnotationSettings(kinds=("appearance",)), progress=False)
    names = sorted(p.name for p in mixed_folder.iterdir())
    measured = [measure_appearance(np.asarray(Image.open(mixed_folder / n).convert("RGB"))) for n in names]
    for attribute in APPEARANCE_ATTRIBUTES:
        expected = dict(zip(names, tertile_levels([m[attribute] for m in measured])))
        rows = table[table["attribute"] == attribute]
        assert dict(zip(rows["image_id"], rows["level"])) == expected


# ---------------------------------------------------------------------------------------------
# distortion texts: every level of a miniature KADID-10k gets its degree words


def _kadid_tree(base: Path) -> Path:
    rows = [(f"I01_{t:02d}_{level:02d}.png", "I01.png", 3.0, 0.5) for t in range(1, 26) for level in range(1, 6)]
    base.mkdir(parents=True)
    (base / "dmos.csv").write_text("\n".join(["dist_img,ref_img,dmos,var"] + [",".join(map(str, r)) for r in rows]))
    for seed, name in enumerate(["I01.png"] + [r[0] for r in rows]):
        write_image(base / "images" / name, size=(24, 20), seed=seed)
    return base


def test_every_kadid_level_gets_its_degree_words(tmp_path: Path) -> None:
    manifest = load_manifest("kadid10k", _kadid_tree(tmp_path / "kadid"))
    table = annotate(manifest, AnnotationSettings(kinds=("distortion",), variants=3), progress=False)
    assert len(table) == 125 * 3 and table["id"].is_unique
    for row in table.itertuples():
        type_code, level = (int(part) for part in Path(row.image_id).stem.split("_")[1:])
        merged = BOOK.dataset_types["kadid10k"][KADID_TYPES[type_code - 1]]
        assert (row.attribute, row.level) == (merged, str(level))
        assert row.text in BOOK.distortion_texts(merged, level)
        words = [w for w in BOOK.degrees[level] if w in row.text]
        assert words, row.text  # the level's degree words, and no other level's phrase could read so
        assert all(row.text not in BOOK.distortion_texts(merged, other) for other in BOOK.degrees if other != level)
    assert set(table["attribute"]) == set(BOOK.distortion)  # KADID reaches all 19 merged types
    assert table.groupby("image_id")["text"].nunique().eq(3).all()  # variants differ


def test_pristine_images_get_pristine_phrases(tmp_path: Path) -> None:
    write_image(tmp_path / "ref" / "a.png", seed=1)
    write_image(tmp_path / "ref" / "b.png", seed=2)
    table = annotate(ImageSet.from_folder(tmp_path / "ref", pristine=True), AnnotationSettings(kinds=("distortion",)),
                     progress=False)
    assert table["attribute"].eq("pristine").all() and table["level"].eq("0").all() and len(table) == 2
    assert table["text"].isin(BOOK.pristine).all()
    # a csv dataset: the row that is its own reference is pristine; the other, of no known type, gets no
    # distortion text, and without a label of its own takes its reference's
    pd.DataFrame({"path": ["ref/a.png", "ref/b.png"], "mos": [5.0, 2.0], "ref": ["ref/a.png", "ref/a.png"],
                  "scene": ["owl", ""]}).to_csv(tmp_path / "labels.csv", index=False)
    manifest = load_manifest("csv", tmp_path, labels="labels.csv", reference_column="ref", labels_column="scene")
    table = annotate(manifest, AnnotationSettings(kinds=("content", "distortion")), progress=False)
    assert table[["image_id", "kind", "attribute", "level"]].values.tolist() == [
        ["ref/a.png", "content", "label", ""], ["ref/a.png", "distortion", "pristine", "0"],
        ["ref/b.png", "content", "label", ""]]
    assert table["text"].tolist()[::2] == ["A photo of an owl.", "A photo of an owl."]


def test_demo_dataset_types_and_labels() -> None:
    table = annotate(load_manifest("demo"), AnnotationSettings(kinds=("content", "distortion")), progress=False)
    info = load_manifest("demo").info["images"]
    distortion = table[table["kind"] == "distortion"]
    assert len(distortion) == 240
    for row in distortion.itertuples():
        merged = BOOK.bank_types[info[row.image_id]["distortion"]]
        assert row.attribute == merged and row.text in BOOK.distortion_texts(merged, info[row.image_id]["level"])
    content = table[table["kind"] == "content"].set_index("image_id")["text"]
    assert content["chelsea_jpeg_3"] == "A photo of a cat." and content["astronaut_pixelate_1"] == "A photo of an astronaut."


def test_content_template_article() -> None:
    assert [BOOK.content_text(s) for s in ("owl", "cat", "hour glass", "university", "umbrella", "  red  car ")] == [
        "A photo of an owl.", "A photo of a cat.", "A photo of an hour glass.", "A photo of a university.",
        "A photo of an umbrella.", "A photo of a red car."]


# ---------------------------------------------------------------------------------------------
# the phrase files


def test_phrase_file_sizes() -> None:
    assert len(BOOK.distortion) == 19
    for merged, phrases in BOOK.distortion.items():
        assert len(phrases) == 10 and len(set(phrases)) == 10, merged
        assert all(p.count("{degree}") == 1 for p in phrases), merged
    assert sorted(BOOK.degrees) == [1, 2, 3, 4, 5]
    words = [w for level in BOOK.degrees.values() for w in level]
    assert all(BOOK.degrees.values()) and len(words) == len(set(words))  # no word in two levels
    assert len(BOOK.pristine) == 20 and len(set(BOOK.pristine)) == 20
    assert sorted(BOOK.appearance) == sorted(APPEARANCE_ATTRIBUTES)
    for attribute, levels in BOOK.appearance.items():
        assert sorted(levels) == ["high", "low", "medium"]
        assert all(len(p) == 20 and len(set(p)) == 20 for p in levels.values()), attribute
    assert sum(len(p) for levels in BOOK.appearance.values() for p in levels.values()) == 240


def test_type_mappings_cover_every_dataset_and_bank_type() -> None:
    merged = set(BOOK.distortion)
    names = {"kadid10k": set(KADID_TYPES), "tid2013": set(TID2013_TYPES),
             "csiq": {folder for folder, _ in CSIQ_DISTORTIONS.values()}, "live": {f for f, _ in LIVE_FOLDERS}}
    for dataset, types in names.items():
        assert set(BOOK.dataset_types[dataset]) == types, dataset
        assert set(BOOK.dataset_types[dataset].values()) <= merged, dataset
    assert set(BOOK.dataset_types["kadid10k"].values()) == merged  # 25 types onto exactly the 19
    kadid = BOOK.dataset_types["kadid10k"]
    assert kadid["gaussian blur"] == kadid["lens blur"] == "blur"  # the merge the paper names
    bank_types = {t for bank in BANK_NAMES for t in get_bank(bank).types}
    assert bank_types <= set(BOOK.bank_types) and set(BOOK.bank_types.values()) <= merged


# ---------------------------------------------------------------------------------------------
# table, store, API, CLI


def test_texts_by_image_filters_kinds(mixed_folder: Path) -> None:
    table = annotate(mixed_folder, AnnotationSettings(), progress=False)
    assert tuple(table.columns) == TABLE_COLUMNS and set(table["kind"]) == {"appearance"}  # no labels, no captioner
    grouped = texts_by_image(table)
    assert list(grouped) == sorted(p.name for p in mixed_folder.iterdir())
    assert all(len(texts) == 4 for texts in grouped.values())
    assert texts_by_image(table, kinds=("content",)) == {}
    with pytest.raises(ValueError, match="text kinds"):
        texts_by_image(table, kinds=("colour",))


def test_store_round_trip_and_keys(tmp_path: Path, mixed_folder: Path) -> None:
    store = FeatureStore(tmp_path / "store")
    first = api.annotate(images=mixed_folder, store=store, progress=False)
    saved = store.load_texts("images", first.attrs["key"])
    pd.testing.assert_frame_equal(saved, first)
    assert store.load_texts("images").attrs["key"] == first.attrs["key"] and store.load_texts("nothing") is None
    assert first.attrs["key"] == annotation_key(ImageSet.from_folder(mixed_folder), AnnotationSettings())
    path = store.texts_dir / "images" / f"{first.attrs['key']}.json"
    written = path.stat().st_mtime_ns
    again = api.annotate(images=mixed_folder, store=store, progress=False)  # cached: not rewritten
    pd.testing.assert_frame_equal(again, first)
    assert path.stat().st_mtime_ns == written
    other = api.annotate(images=mixed_folder, store=store, progress=False, seed=1)
    assert other.attrs["key"] != first.attrs["key"]
    copy = tmp_path / "copy"
    copy.mkdir()
    for image in mixed_folder.iterdir():
        copy.joinpath(image.name).write_bytes(image.read_bytes())
    before = api.annotate(images=copy, store=store, progress=False).attrs["key"]
    write_image(copy / "grace.png", seed=9)  # a new image: another key, the new image annotated
    after = api.annotate(images=copy, store=store, progress=False)
    assert after.attrs["key"] != before and "grace.png" in set(after["image_id"])


def test_store_keeps_any_text_and_refuses_a_damaged_table(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path / "store")
    table = pd.DataFrame({"image_id": ["a, b.png", "c\"d.png", "é/f.png"], "kind": ["content"] * 3,
                          "level": ["", "0", "low"], "text": ["A photo of a \"cat\", really.", "two\nlines", "naïve"]})
    store.save_texts("toy", "k1", table, {"note": "x"})
    back = store.load_texts("toy", "k1")
    pd.testing.assert_frame_equal(back, table)
    assert back.attrs == {"key": "k1", "info": {"note": "x"}} and store.load_texts("toy", "k2") is None
    rows = store.texts_dir / "toy" / "k1.csv.gz"
    rows.write_bytes(rows.read_bytes()[:20])  # cut short
    with pytest.raises(ValueError, match="damaged store file .*k1.csv.gz"):
        store.load_texts("toy", "k1")


def test_cli_table_and_json(tmp_path: Path, mixed_folder: Path) -> None:
    store = ["--store", str(tmp_path / "store")]
    shown = CliRunner().invoke(cli, ["annotate", "--images", str(mixed_folder), "-q", *store])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0].split() == ["image_id", "kind", "attribute", "level", "text"] and len(lines) == 1 + 14 * 4
    as_json = CliRunner().invoke(cli, ["annotate", "--images", str(mixed_folder), "-q", "--format", "json", *store])
    rows = json.loads(as_json.output)
    expected = api.annotate(images=mixed_folder, store=tmp_path / "store", progress=False)
    assert rows == expected.to_dict(orient="records")
    assert {"id", "kind", "attribute", "level", "text", "image_id"} <= set(rows[0])
    assert all(line.split()[-1] in row["text"] for line, row in zip(lines[1:], rows))


def test_cli_refuses_nothing_to_make_and_both_sources(tmp_path: Path, mixed_folder: Path) -> None:
    runner = CliRunner()
    none = runner.invoke(cli, ["annotate", "--images", str(mixed_folder), "--no-content", "--no-distortion",
                               "--no-appearance", "--store", str(tmp_path / "s")])
    assert none.exit_code == 2 and "leave no texts" in none.output
    both = runner.invoke(cli, ["annotate", "-d", "demo", "--images", str(mixed_folder), "--store", str(tmp_path / "s")])
    assert both.exit_code == 2 and "not both" in both.output


def test_cli_on_the_demo_dataset_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(cli, ["annotate", "--dataset", "demo", "--format", "json", "-q",
                                      "--store", str(tmp_path / "store")])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    kinds = pd.Series([r["kind"] for r in rows]).value_counts().to_dict()
    assert kinds == {"appearance": 240 * 4, "content": 240, "distortion": 240}
    assert set(TEXT_KINDS) == set(kinds)


def test_captioner_without_weights_offline_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(CaptionerError, match=r"captioner 'nobody/no-such-captioner' cannot be loaded .*hf download"):
        TransformersCaptioner("nobody/no-such-captioner").caption([np.zeros((8, 8, 3), np.uint8)])


def _tiny_blip(folder: Path, word: str) -> Path:
    """A real BLIP captioning model, tiny and random, whose language head is biased to say ``word``
    (written by save_pretrained, as a downloaded one would be)."""
    import torch
    from transformers import (BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor,
                              BlipProcessor)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "a", "cat", "owl", "photo"]
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(words)}, bos_token="[DEC]")
    small = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = BlipConfig(vision_config={**small, "image_size": 32, "patch_size": 16},
                        text_config={**small, "vocab_size": len(words), "encoder_hidden_size": 16, "bos_token_id": 5,
                                     "pad_token_id": 0, "sep_token_id": 3, "max_position_embeddings": 32},
                        projection_dim=16)
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(config)
    with torch.no_grad():
        model.text_decoder.cls.predictions.bias[words.index(word)] = 50.0
    model.save_pretrained(folder)
    BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer).save_pretrained(folder)
    return folder


def test_images_without_labels_are_captioned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = _tiny_blip(tmp_path / "blip", "owl")
    write_image(tmp_path / "images" / "x.png", size=(40, 30), seed=1)
    write_image(tmp_path / "images" / "y.png", size=(30, 50), seed=2)
    labels = tmp_path / "labels.csv"
    labels.write_text("image_id,label\nx.png,cat\n")
    table = api.annotate(images=tmp_path / "images", labels=labels, captioner=str(model), kinds=("content",),
                         store=tmp_path / "store", progress=False)
    assert table[["image_id", "attribute", "text"]].values.tolist() == [
        ["x.png", "label", "A photo of a cat."], ["y.png", "caption", "Owl" + " owl" * 29 + "."]]  # 30 new tokens at most
    captioner = TransformersCaptioner(str(model), max_new_tokens=2)
    assert captioner.caption([np.zeros((20, 20, 3), np.uint8)] * 3) == ["owl owl"] * 3  # greedy: the biased word


@pytest.mark.slow
def test_worker_processes_measure_the_same(mixed_folder: Path) -> None:
    from iqa_store.texts import measure_images
    images = ImageSet.from_folder(mixed_folder)
    alone, _ = measure_images(images, workers=1, progress=False)
    pooled, _ = measure_images(images, workers=2, progress=False)
    pd.testing.assert_frame_equal(alone, pooled)
    assert annotate(images, workers=2, progress=False).equals(annotate(images, progress=False))


def test_unreadable_images_and_bad_label_files(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "good.png", seed=1)
    (tmp_path / "images" / "bad.jpg").write_bytes(b"not an image")
    notes: list[str] = []
    table = annotate(tmp_path / "images", progress=False, log=notes.append)
    assert set(table["image_id"]) == {"good.png"} and len(table["kind"]) == 4
    assert len(table.attrs["skipped"]) == 1 and "bad.jpg" in table.attrs["skipped"][0]
    assert any("could not be read" in note and "bad.jpg" in note for note in notes)
    stored = api.annotate(images=tmp_path / "images", store=tmp_path / "store", progress=False)
    again = api.annotate(images=tmp_path / "images", store=tmp_path / "store", progress=False)
    assert stored.attrs["skipped"] == again.attrs["skipped"] == table.attrs["skipped"]  # kept in the store
    (tmp_path / "labels.csv").write_text("name,label\ngood.png,owl\n")
    result = CliRunner().invoke(cli, ["annotate", "--images", str(tmp_path / "images"), "--labels",
                                      str(tmp_path / "labels.csv"), "--store", str(tmp_path / "store")])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "needs columns image_id (or reference_id) and label" in lines[0]
