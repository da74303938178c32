"""Every registered training stage runs the StageTests conformance suite."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from iqa_store.datasets import load_manifest
from iqa_store.extraction.jobs import build_extractor
from iqa_store.extraction.runner import extract
from iqa_store.extraction.weights import resolve_weights
from iqa_store.extractors import RunOptions
from iqa_store.splits import ProtocolSpec
from iqa_store.store import FeatureStore, Scope
from iqa_store.train import STAGES
from iqa_store.train.data import TrainingData
from iqa_store.train.testing import StageTests
from tests.conftest import TINY_CLIP_ARCH, TINY_CLIP_RN_ARCH, write_images
from tests.test_metaiqa import roots_option, write_prior_datasets

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _csv_dataset(folder: Path) -> Any:
    names = write_images(folder, 8, size=(64, 96))
    pd.DataFrame({"path": names, "mos": np.linspace(1, 5, len(names))}).to_csv(folder / "labels.csv", index=False)
    return load_manifest("csv", folder, labels="labels.csv", dataset_name="tiny")


class Conformance(StageTests):
    @pytest.fixture
    def stage_cli(self) -> Any:
        def view(name: str) -> tuple[str, list, Any]:
            from click.testing import CliRunner

            from iqa_store.cli import cli
            from iqa_store.cli.fields import field_options, values
            shown = CliRunner().invoke(cli, ["train", name, "--help"], terminal_width=400)
            assert shown.exit_code == 0, shown.output
            return shown.output, field_options(STAGES.get(name)), values
        return view

    @pytest.fixture
    def read_export(self, tmp_path: Path) -> Any:
        def read(record: Any, store: FeatureStore) -> np.ndarray:
            reader = record.config["reader"]
            extractor = build_extractor(reader, resolve_weights(f"registry:{record.id}", reader, store))
            manifest = _csv_dataset(tmp_path / "reader-data")
            report = extract(manifest, extractor, store, RunOptions(batch_size=4), progress=False,
                             log=lambda line: None)
            return store.get(report.feature_set).read()
        return read


class ImagesOnly(Conformance):
    @pytest.fixture
    def training_data(self, tmp_path: Path) -> TrainingData:
        write_images(tmp_path / "photos", 4, size=(96, 128))
        return TrainingData.from_folder(tmp_path / "photos")


class ImagesTexts(Conformance):
    """A folder of images with their texts from the real annotation layer (content texts need a
    label or a captioner: these images get appearance texts only)."""

    @pytest.fixture
    def training_data(self, tmp_path: Path) -> TrainingData:
        from iqa_store.texts import annotate, texts_by_image
        write_images(tmp_path / "photos", 4, size=(96, 128))
        data = TrainingData.from_folder(tmp_path / "photos")
        by_image = texts_by_image(annotate(tmp_path / "photos", progress=False))
        texts = [by_image[path.relative_to(tmp_path / "photos").as_posix()] for path in data.paths]
        assert all(texts)
        return data.with_texts(texts)


class TestSlique(ImagesTexts):
    stage_name = "slique"
    tiny_hyperparameters = {"backbone": "resnet-tiny", "width": 8, "embed_dim": 16, "head_dim": 16, "text_width": 32,
                            "text_layers": 1, "text_heads": 2, "context_length": 16, "crop": 32}
    invalid_hyperparameters = {"objective": "both"}
    training = {"batch_size": 2, "lr": 0.05}


class TestReiqaQuality(ImagesOnly):
    stage_name = "reiqa-quality"
    tiny_hyperparameters = {"backbone": "resnet-tiny", "patch": 32, "n_aug": 2, "queue_size": 64, "momentum": 0.9}
    invalid_hyperparameters = {"backbone": "resnet-9000"}
    training = {"batch_size": 2, "lr": 0.05}


class TestReiqaContent(ImagesOnly):
    stage_name = "reiqa-content"
    tiny_hyperparameters = {"backbone": "resnet-tiny", "crop": 32, "queue_size": 16}
    invalid_hyperparameters = {"backbone": "resnet-9000"}
    training = {"batch_size": 2, "lr": 0.05}


@pytest.mark.usefixtures("tiny_clip")
class TestQualiclip(ImagesOnly):
    stage_name = "qualiclip"
    tiny_hyperparameters = {"arch": TINY_CLIP_RN_ARCH, "pretrained": "none", "crop": 64}
    invalid_hyperparameters = {"max_shift": 1.0}
    training = {"batch_size": 2, "lr": 1e-3}


class TestCnniqa(Conformance):
    stage_name = "cnniqa"
    tiny_hyperparameters = {"fc_width": 16, "patches_per_image": 2, "dropout": 0.5}
    invalid_hyperparameters = {"dropout": 1.0}
    training = {"batch_size": 2}

    @pytest.fixture
    def training_data(self, tmp_path: Path) -> TrainingData:
        manifest = _csv_dataset(tmp_path / "labelled")
        split = FeatureStore(tmp_path / "splits").splits(manifest, ProtocolSpec("random-80-20", 2, 0))[0]
        return TrainingData.from_split(manifest, split.train, Scope("tiny", "random-80-20", split.key, 0))


@pytest.mark.usefixtures("tiny_clip")
class TestClipiqaPlus(TestCnniqa):
    stage_name = "clipiqa-plus"
    tiny_hyperparameters = {"arch": TINY_CLIP_RN_ARCH, "pretrained": "none"}
    invalid_hyperparameters = {"n_context": 15}
    training = {"batch_size": 2, "lr": 0.5}


@pytest.mark.usefixtures("tiny_clip")
class TestMpiqe(TestCnniqa):
    stage_name = "mpiqe"
    tiny_hyperparameters = {"arch": TINY_CLIP_ARCH, "pretrained": "none", "window": 2, "heads": 2, "decoder_layers": 1,
                            "crops": 2}
    invalid_hyperparameters = {"scene_prompts": False, "distortion_prompts": False}
    training = {"batch_size": 2, "lr": 1e-3}


class TestMetaiqaPrior(Conformance):
    stage_name = "metaiqa-prior"
    tiny_hyperparameters = {"backbone": "resnet-tiny", "init": "random", "resize": 40, "crop": 32,
                            "tasks_per_step": 2, "support_fraction": 0.5}
    invalid_hyperparameters = {"datasets": "koniq10k"}
    training = {"batch_size": 8, "lr": 1e-3}

    @pytest.fixture
    def training_data(self, tmp_path: Path) -> TrainingData:
        roots = write_prior_datasets(tmp_path / "prior-data")
        return STAGES.get(self.stage_name)(roots=roots_option(roots)).own_data()


class TestMetaiqa(TestCnniqa):
    stage_name = "metaiqa"
    tiny_hyperparameters = {"backbone": "resnet-tiny", "init": "random", "resize": 40, "crop": 32, "eval_every": 2}
    invalid_hyperparameters = {"selection": "test"}
    training = {"batch_size": 2, "lr": 1e-3}

    @pytest.fixture
    def training_data(self, tmp_path: Path) -> TrainingData:
        """Training rows with the split's validation rows (the weights kept so far are in every checkpoint)."""
        folder = tmp_path / "labelled"
        names = write_images(folder, 20, size=(48, 64))
        pd.DataFrame({"path": names, "mos": np.linspace(1, 5, len(names))}).to_csv(folder / "labels.csv", index=False)
        manifest = load_manifest("csv", folder, labels="labels.csv", dataset_name="tiny")
        split = FeatureStore(tmp_path / "splits").splits(manifest, ProtocolSpec("random-70-10-20", 2, 0))[0]
        scope = Scope("tiny", "random-70-10-20", split.key, 0)
        return TrainingData.from_split(manifest, split.train, scope, split.val)


def test_every_registered_stage_runs_the_suite() -> None:
    module = sys.modules[__name__]
    covered = {cls.stage_name for cls in vars(module).values()
               if isinstance(cls, type) and issubclass(cls, StageTests) and cls.__name__.startswith("Test")}
    assert covered == set(STAGES.names())
