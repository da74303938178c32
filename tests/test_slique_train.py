"""SLIQUE end to end on the CPU: texts from the store's annotation table (made on the fly),
training that learns, the registry encoder read back by the extractor, ablations that change
what is trained, and start weights read without unpickling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import PicklePayload, write_images
from iqa_store import api
from iqa_store.datasets import load_manifest
from iqa_store.extraction.jobs import build_extractor
from iqa_store.extraction.runner import extract
from iqa_store.extraction.weights import ResolvedWeights
from iqa_store.extractors import RunOptions
from iqa_store.nets.slique import ImageEncoder, build_trunk
from iqa_store.store import FeatureStore
from iqa_store.texts import annotate, texts_by_image
from iqa_store.train import _with_texts
from iqa_store.train.data import TrainingData
from iqa_store.nets.weights import read_state_dict as read_state
from iqa_store.train.slique import SliqueStage

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"backbone": "resnet-tiny", "width": 8, "embed_dim": 16, "head_dim": 16, "text_width": 32, "text_layers": 1,
        "text_heads": 2, "context_length": 16, "crop": 32}
QUIET = {"device": "cpu", "workers": 0, "progress": False, "log": lambda line: None}


@pytest.fixture()
def tiny_dataset(tmp_path: Path) -> Path:
    """Six photographs in a csv dataset with scene labels (content texts) and MOS (never read by the stage)."""
    root = tmp_path / "data"
    names = write_images(root, 6, size=(72, 96))
    pd.DataFrame({"path": names, "mos": np.linspace(1, 5, 6), "scene": ["cat", "dog", "owl", "cat", "dog", "owl"]}
                 ).to_csv(root / "labels.csv", index=False)
    return root


def _options(root: Path) -> dict:
    return {"root": root, "dataset_options": {"labels": "labels.csv", "labels_column": "scene", "dataset_name": "tiny"}}


def test_texts_come_from_the_stores_annotation_table_and_follow_the_kind_flags(tiny_dataset: Path,
                                                                                tmp_path: Path) -> None:
    store = FeatureStore(tmp_path / "store")
    manifest = load_manifest("csv", tiny_dataset, labels="labels.csv", labels_column="scene", dataset_name="tiny")
    data = TrainingData.from_manifest(manifest)
    made = _with_texts(data, ("content", "distortion", "appearance"), store, None, "csv", tiny_dataset,
                       _options(tiny_dataset)["dataset_options"], False, lambda line: None)
    table = store.load_texts("tiny")  # made on the fly and kept in the store
    assert table is not None
    expected = texts_by_image(annotate(manifest, progress=False))
    assert made.texts == tuple(expected[i] for i in manifest.ids)  # the stored table is the annotation layer's
    assert "A photo of a cat." in made.texts[0]
    for kind, flag in (("content", "content_texts"), ("appearance", "appearance_texts")):
        stage = SliqueStage(**TINY, **{flag: False})
        kept = _with_texts(data, stage.text_kinds(), store, None, "csv", tiny_dataset,
                           _options(tiny_dataset)["dataset_options"], False, lambda line: None)
        switched_off = set(table.loc[table["kind"] == kind, "text"])
        assert kept.texts and all(own and not switched_off & set(own) for own in kept.texts)
        assert kept.identity != made.identity  # other texts, another run
    none = _with_texts(data, SliqueStage(objective="image-image").text_kinds(), store, None, "csv", tiny_dataset,
                       {}, False, lambda line: None)
    assert none.texts is None and none.identity == data.identity


@pytest.mark.slow
def test_a_cpu_run_learns(tiny_dataset: Path, tmp_path: Path) -> None:
    """60 steps of the joint objective on six images: the loss falls well below where it started, and
    below the same run's (same samples, same draws) with a learning rate of 0, which learns nothing."""
    runs = {lr: api.train("slique", dataset="csv", **_options(tiny_dataset), hyperparameters=TINY, name=f"s{lr}",
                          store=FeatureStore(tmp_path / "store"), steps=60, batch_size=6, lr=lr, seed=0, **QUIET)[0]
            for lr in (0.05, 0.0)}
    trained, frozen = (np.array(runs[lr].losses) for lr in (0.05, 0.0))
    assert trained[-10:].mean() < 0.9 * trained[:10].mean(), trained
    assert trained[-10:].mean() < 0.9 * frozen[-10:].mean(), (trained, frozen)


def test_the_registered_encoder_is_what_the_extractor_reads(tiny_dataset: Path, tmp_path: Path) -> None:
    store = FeatureStore(tmp_path / "store")
    [report] = api.train("slique", dataset="csv", **_options(tiny_dataset), hyperparameters=TINY, store=store,
                         steps=3, batch_size=6, lr=0.05, seed=0, **QUIET)
    record = report.encoder
    assert record.config["reader"] == "slique" and record.config["feature_dim"] == 2 * 64
    assert record.provenance["data"]["images"] == 6

    # the registry's weights rebuild the image encoder exactly; features computed here by hand
    state = record.load_state_dict()
    encoder = ImageEncoder("resnet-tiny", 8, 16, None, 16)
    encoder.load_state_dict(state, strict=True)
    encoder.eval()
    manifest = load_manifest("csv", tiny_dataset, labels="labels.csv", labels_column="scene", dataset_name="tiny")
    rows = []
    with torch.no_grad():
        for path in manifest.paths:
            image = Image.open(path).convert("RGB")
            half = image.resize((image.size[0] // 2, image.size[1] // 2), Image.Resampling.BICUBIC)
            tensors = [torch.from_numpy(np.asarray(x, dtype=np.float32) / 255).permute(2, 0, 1)[None]
                       for x in (image, half)]
            rows.append(torch.cat([F.normalize(encoder.trunk(t), dim=1) for t in tensors], dim=1)[0].numpy())
    extracted = api.extract("slique", "csv", **_options(tiny_dataset), weights=f"registry:{record.id}", store=store,
                            **QUIET)
    values = store.get(extracted.feature_set).read()
    np.testing.assert_allclose(values, np.stack(rows), rtol=1e-4, atol=1e-5)

    # a second extraction, elsewhere, from the same file: bit for bit the same (no random flips)
    extractor = build_extractor("slique", ResolvedWeights("file", str(record.weights_path)),
                                encoder_config=record.config)
    other = FeatureStore(tmp_path / "other")
    again = extract(manifest, extractor, other, RunOptions(batch_size=32), progress=False, log=lambda line: None)
    assert np.array_equal(other.get(again.feature_set).read(), values)


@pytest.mark.parametrize(("objective", "present", "absent"), [
    ("image-image", "image_head.", "text_projection."), ("image-text", "text_projection.", "image_head.")])
def test_an_ablated_objective_trains_and_exports_only_its_branch(objective: str, present: str, absent: str,
                                                                 tmp_path: Path) -> None:
    write_images(tmp_path / "photos", 4, size=(72, 96))
    store = FeatureStore(tmp_path / "store")
    [report] = api.train("slique", images=tmp_path / "photos", hyperparameters={**TINY, "objective": objective},
                         store=store, steps=3, batch_size=4, lr=0.05, **QUIET)
    keys = report.encoder.load_state_dict().keys()
    assert any(k.startswith(present) for k in keys) and not any(k.startswith(absent) for k in keys)
    assert np.isfinite(report.losses).all()
    has_table = store.load_texts("images") is not None
    assert has_table == (objective != "image-image")  # image-image needs no annotation at all


def test_start_weights_load_by_layout_and_a_pickle_is_refused(tmp_path: Path) -> None:
    torch.manual_seed(5)
    source = build_trunk("resnet-tiny", 8)
    path = tmp_path / "trunk.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    torch.manual_seed(0)
    model = SliqueStage(**TINY, init_weights=str(path)).build_model()
    assert all(torch.equal(model.image.trunk.state_dict()[k], v) for k, v in source.state_dict().items())

    marker = tmp_path / "payload-ran"
    pickled = tmp_path / "pickled.pt"
    torch.save({"state_dict": source.state_dict(), "payload": PicklePayload(marker)}, pickled)
    with pytest.raises(ValueError, match="refusing to load .*pickled.pt") as error:
        read_state(pickled)
    assert "\n" not in str(error.value) and not marker.exists()
    wrong = tmp_path / "wide.pt"
    torch.save(build_trunk("resnet-tiny", 16).state_dict(), wrong)
    with pytest.raises(ValueError, match="does not fit this trunk: shape mismatches"):
        SliqueStage(**TINY, init_weights=str(wrong)).build_model()


def test_a_table_annotate_made_with_its_own_options_is_the_one_training_uses(tmp_path: Path) -> None:
    """`iqa-store annotate --images DIR --pristine` first: training finds that table (pristine texts)
    instead of making one with the defaults, which would have none."""
    write_images(tmp_path / "photos", 3, size=(72, 96))
    store = FeatureStore(tmp_path / "store")
    made = api.annotate(images=tmp_path / "photos", pristine=True, store=store, progress=False)
    pristine = set(made.loc[made["attribute"] == "pristine", "text"])
    assert pristine
    data = _with_texts(TrainingData.from_folder(tmp_path / "photos"), ("distortion",), store, tmp_path / "photos",
                       None, None, None, False, lambda line: None)
    assert all(own and set(own) <= pristine for own in data.texts)


@pytest.mark.slow
def test_torchrun_ddp_on_cpu_registers_one_encoder(tmp_path: Path) -> None:
    """Two processes (gloo), each contrasting its half of the batch; rank 0 writes the one encoder."""
    import os
    import subprocess
    import sys

    from iqa_store.store import list_encoders
    write_images(tmp_path / "photos", 8, size=(72, 96))
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in TINY.items()]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "--no-python",
               str(Path(sys.executable).parent / "iqa-store"), "train", "slique", "--images", str(tmp_path / "photos"),
               *flags, "--steps", "3", "--batch-size", "4", "--lr", "0.05", "--store", str(tmp_path / "store")]
    run = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    records = list_encoders(FeatureStore(tmp_path / "store"))
    assert len(records) == 1 and records[0].provenance["world_size"] == 2
    assert records[0].config["reader"] == "slique"
