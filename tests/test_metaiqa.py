"""MetaIQA: the network against torchvision and its definition, the bi-level update against a hand
computation, task sampling, and the prior + per-split fine-tuning without leakage."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from iqa_store import api
from iqa_store.cli import cli
from iqa_store.nets.metaiqa import MetaIQANet, eval_view
from iqa_store.requests import RequestError
from iqa_store.splits import ProtocolSpec
from iqa_store.store import FeatureStore, Scope, list_encoders
from iqa_store.train.data import TrainingData
from iqa_store.train.metaiqa import (MetaiqaPriorStage, MetaiqaStage, Task, TaskSampler, adapted_parameters, bilevel_loss,
                                     distortion_task)
from tests.conftest import TINY_CLIP_ARCH, write_images

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NETWORK = {"backbone": "resnet-tiny", "init": "random", "resize": 40, "crop": 32, "dropout": 0.0}
PRIOR = {**NETWORK, "tasks_per_step": 2, "support_fraction": 0.5}
PRIOR_TRAINING = {"steps": 3, "batch_size": 8, "lr": 1e-3, "device": "cpu", "workers": 0}
QUIET: dict[str, Any] = {"progress": False, "log": lambda line: None}


# --- tiny KADID-10k and TID2013 trees in their official layouts ------------------------------------------

def _image(path: Path, seed: int, size: int = 40) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def write_prior_datasets(base: Path, references: int = 2, types: int = 3, levels: int = 3) -> dict[str, Path]:
    """KADID (ROOT/dmos.csv, ROOT/images/) and TID2013 (mos_with_names.txt, distorted_images/,
    reference_images/) with ``types`` distortion types each; MOS falls with the level."""
    kadid, tid = base / "kadid10k", base / "tid2013"
    rows, lines, seed = ["dist_img,ref_img,dmos,var"], [], 0
    for ref in range(1, references + 1):
        _image(kadid / "images" / f"I{ref:02d}.png", seed := seed + 1)
        _image(tid / "reference_images" / f"I{ref:02d}.BMP", seed := seed + 1)
        for kind in range(1, types + 1):
            for level in range(1, levels + 1):
                _image(kadid / "images" / f"I{ref:02d}_{kind:02d}_{level:02d}.png", seed := seed + 1)
                rows.append(f"I{ref:02d}_{kind:02d}_{level:02d}.png,I{ref:02d}.png,{5.0 - level},0.5")
                _image(tid / "distorted_images" / f"i{ref:02d}_{kind:02d}_{level}.bmp", seed := seed + 1)
                lines.append(f"{9.0 - 2 * level} I{ref:02d}_{kind:02d}_{level}.bmp")
    (kadid / "dmos.csv").write_text("\n".join(rows) + "\n")
    (tid / "mos_with_names.txt").write_text("\n".join(lines) + "\n")
    return {"kadid10k": kadid, "tid2013": tid}


def roots_option(roots: dict[str, Path]) -> str:
    return ",".join(f"{name}={path}" for name, path in roots.items())


def labelled_folder(folder: Path, count: int = 40, seed: int = 3) -> Path:
    names = write_images(folder, count, size=(48, 64), seed=seed)
    mos = np.random.default_rng(seed).uniform(1, 5, count)
    pd.DataFrame({"path": names, "mos": mos}).to_csv(folder / "labels.csv", index=False)
    return folder


# --- the network --------------------------------------------------------------------------------------------

def test_the_network_is_torchvision_resnet18_with_its_classifier_then_the_official_head() -> None:
    torch.manual_seed(0)
    net = MetaIQANet("resnet18").double().eval()
    head = net.head
    assert [tuple(head[n].weight.shape) for n in ("fc1", "fc2", "fc3")] == [(1024, 1000), (512, 1024), (1, 512)]
    assert isinstance(head["act1"], torch.nn.PReLU) and head["bn2"].num_features == 512
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        logits = net.backbone(x)  # torchvision's own forward, classifier included
        assert torch.allclose(net.features(x, "logits"), logits)
        bn1, bn2 = head["bn1"], head["bn2"]

        def batchnorm(v: torch.Tensor, bn: Any) -> torch.Tensor:  # eval: running statistics
            return (v - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias

        def prelu(v: torch.Tensor, act: Any) -> torch.Tensor:
            return torch.where(v > 0, v, act.weight * v)
        hidden = prelu(batchnorm(logits @ head["fc1"].weight.T + head["fc1"].bias, bn1), head["act1"])
        penultimate = prelu(batchnorm(hidden @ head["fc2"].weight.T + head["fc2"].bias, bn2), head["act2"])
        assert torch.allclose(net.features(x), penultimate)
        score = 1 / (1 + torch.exp(-(penultimate @ head["fc3"].weight.T + head["fc3"].bias)))
        assert torch.allclose(net(x), score[:, 0])
        assert net.features(x, "gap").shape == (2, 512)


def test_the_evaluation_view_is_the_whole_image_resized_and_imagenet_normalised() -> None:
    image = torch.rand(3, 30, 50, dtype=torch.float64)
    view = eval_view(image, 10)
    resized = torch.nn.functional.interpolate(image[None], size=(10, 10), mode="bilinear", antialias=True)[0]
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(3, 1, 1)
    assert torch.allclose(view, (resized.clamp(0, 1) - mean) / std)


# --- the bi-level update against a hand computation --------------------------------------------------------

class _Linear(torch.nn.Module):
    def __init__(self, weights: np.ndarray) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(weights))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w


def _toy_tasks(rng: np.random.Generator) -> list[tuple[np.ndarray, ...]]:
    return [tuple(rng.normal(size=shape) for shape in ((5, 3), (5,), (4, 3), (4,))) for _ in range(2)]


def _hand_meta_gradient(w: np.ndarray, tasks: list, alpha: float, steps: int, second_order: bool) -> np.ndarray:
    """L(w; X, y) = mean((Xw - y)^2): gradient (2/n) X^T (Xw - y), Hessian (2/n) X^T X (constant).

    w_k+1 = w_k - alpha grad_s(w_k); the meta-gradient of the mean query loss is the mean over
    tasks of J^T grad_q(w_K), with J = (I - alpha H_s)^K (second order) or I (first order)."""
    total = np.zeros_like(w)
    for xs, ys, xq, yq in tasks:
        fast = w.copy()
        for _ in range(steps):
            fast = fast - alpha * 2 / len(ys) * xs.T @ (xs @ fast - ys)
        grad_query = 2 / len(yq) * xq.T @ (xq @ fast - yq)
        jacobian = np.linalg.matrix_power(np.eye(len(w)) - alpha * 2 / len(ys) * xs.T @ xs, steps)
        total += (jacobian.T @ grad_query) if second_order else grad_query
    return total / len(tasks)


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("second_order", [False, True])
def test_the_meta_update_equals_the_hand_computation_on_two_tasks(second_order: bool, steps: int) -> None:
    rng = np.random.default_rng(5)
    w0, tasks, alpha, beta = rng.normal(size=3), _toy_tasks(rng), 0.1, 0.05
    model = _Linear(w0)
    torch_tasks = [Task((torch.tensor(a), torch.tensor(b)), (torch.tensor(c), torch.tensor(d))) for a, b, c, d in tasks]
    loss = bilevel_loss(model, torch_tasks, torch.nn.functional.mse_loss, alpha, steps, second_order)
    optimiser = torch.optim.SGD(model.parameters(), lr=beta)
    loss.backward()
    expected = _hand_meta_gradient(w0, tasks, alpha, steps, second_order)
    np.testing.assert_allclose(model.w.grad.numpy(), expected, rtol=1e-10)
    optimiser.step()  # the outer step: w - beta x meta-gradient
    np.testing.assert_allclose(model.w.detach().numpy(), w0 - beta * expected, rtol=1e-10)
    other = _hand_meta_gradient(w0, tasks, alpha, steps, not second_order)
    assert not np.allclose(expected, other, rtol=1e-3)  # the two orders differ here: the test can tell


def test_the_inner_step_is_one_gradient_step_from_the_shared_weights() -> None:
    rng = np.random.default_rng(1)
    w0, ((xs, ys, _, _), _) = rng.normal(size=3), _toy_tasks(rng)
    model = _Linear(w0)
    fast = adapted_parameters(model, dict(model.named_parameters()), (torch.tensor(xs), torch.tensor(ys)),
                              torch.nn.functional.mse_loss, 0.3, 1, False)
    np.testing.assert_allclose(fast["w"].detach().numpy(), w0 - 0.3 * 2 / 5 * xs.T @ (xs @ w0 - ys), rtol=1e-12)
    assert torch.equal(model.w.detach(), torch.tensor(w0))  # the shared weights are not touched


# --- tasks --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("image_id", "task"), [("kadid10k/I01_07_03.png", "kadid10k/07"),
                                                ("tid2013/i25_24_5.bmp", "tid2013/24"),
                                                ("tid2013/I01_01_1.BMP", "tid2013/01")])
def test_the_task_of_an_image_is_its_dataset_and_distortion_type(image_id: str, task: str) -> None:
    assert distortion_task(image_id) == task


@pytest.mark.parametrize("image_id", ["koniq/826373.jpg", "kadid10k/I01.png", "kadid10k/I01_xx_01.png"])
def test_an_image_without_a_distortion_type_is_refused(image_id: str) -> None:
    with pytest.raises(ValueError, match="cannot tell the distortion type"):
        distortion_task(image_id)


def test_each_step_draws_distinct_tasks_and_distinct_images_of_each() -> None:
    tasks = tuple(tuple(range(10 * t, 10 * t + 6 + t)) for t in range(5))
    sampler = TaskSampler(tasks, tasks_per_step=3, per_task=4, seed=2, start=0, total=6, steps_per_epoch=2)
    steps = list(sampler)
    assert len(steps) == len(sampler) == 6
    for step, keys in enumerate(steps):
        assert {epoch for epoch, _ in keys} == {step // 2}
        groups = [[index for _, index in keys[i:i + 4]] for i in range(0, 12, 4)]
        owners = [{index // 10 for index in group} for group in groups]
        assert all(len(owner) == 1 for owner in owners) and len({min(o) for o in owners}) == 3
        assert all(len(set(group)) == 4 for group in groups)
    resumed = TaskSampler(tasks, 3, 4, 2, 4, 6, 2)
    assert list(resumed) == steps[4:]  # a step's draw depends on (seed, step) only
    assert list(TaskSampler(tasks, 3, 4, 3, 0, 6, 2)) != steps


# --- the prior, then fine-tuning per split -------------------------------------------------------------------

@pytest.fixture(scope="module")
def prior_roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_prior_datasets(tmp_path_factory.mktemp("prior-data"))


@pytest.fixture(scope="module")
def prior(prior_roots: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[FeatureStore, Any]:
    store = FeatureStore(tmp_path_factory.mktemp("store"))
    torch.set_num_threads(1)
    [report] = api.train("metaiqa-prior", hyperparameters={**PRIOR, "roots": roots_option(prior_roots)}, store=store,
                         **PRIOR_TRAINING, **QUIET)
    return store, report


def test_the_prior_meta_trains_on_one_task_per_distortion_type_of_both_datasets(prior: tuple) -> None:
    _, report = prior
    config = report.encoder.config
    assert config["prior_datasets"] == ["kadid10k", "tid2013"]
    assert config["tasks"] == [f"{d}/{t:02d}" for d in ("kadid10k", "tid2013") for t in (1, 2, 3)]
    assert report.encoder.scope is None and report.encoder.provenance["data"]["images"] == 36
    assert config["reader"] == "metaiqa" and config["feature_dim"] == 512
    assert len(report.losses) == 3 and np.isfinite(report.losses).all()


def test_the_second_order_option_reaches_the_update(prior: tuple, prior_roots: dict[str, Path], tmp_path: Path) -> None:
    """The same run with --second-order: the same draws, a different meta-gradient, other weights."""
    _, first = prior
    [second] = api.train("metaiqa-prior", hyperparameters={**PRIOR, "roots": roots_option(prior_roots),
                                                            "second_order": True},
                         store=tmp_path, **PRIOR_TRAINING, **QUIET)
    assert second.encoder.config["hyperparameters"]["second_order"] is True
    assert second.losses[0] == first.losses[0]  # the first query loss is computed before any update
    a, b = first.encoder.load_state_dict(), second.encoder.load_state_dict()
    assert not torch.equal(a["head.fc3.weight"], b["head.fc3.weight"])


def test_the_prior_maps_each_datasets_mos_to_0_1_by_its_range(prior_roots: dict[str, Path]) -> None:
    data = MetaiqaPriorStage(roots=roots_option(prior_roots)).own_data()
    by_id = dict(zip(data.ids, data.mos))
    assert by_id["kadid10k/I01_01_02.png"] == pytest.approx((3.0 - 1) / 4)  # KADID MOS 1-5
    assert by_id["tid2013/I01_01_2.bmp"] == pytest.approx(5.0 / 9)  # TID2013 MOS 0-9


def test_a_prior_dataset_without_a_root_is_named(prior_roots: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IQA_KADID_ROOT", raising=False)
    with pytest.raises(ValueError, match=r"where is kadid10k\? Give --roots kadid10k=DIR or set IQA_KADID_ROOT"):
        MetaiqaPriorStage(roots=f"tid2013={prior_roots['tid2013']}").own_data()
    monkeypatch.setenv("IQA_KADID_ROOT", str(prior_roots["kadid10k"]))
    assert len(MetaiqaPriorStage(roots=f"tid2013={prior_roots['tid2013']}").own_data().ids) == 36


def test_roots_take_a_home_relative_folder(prior_roots: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    base = prior_roots["kadid10k"].parent
    monkeypatch.setenv("HOME", str(base))  # the shell leaves "~" after "=" unexpanded: the stage expands it
    data = MetaiqaPriorStage(roots="kadid10k=~/kadid10k, tid2013=~/tid2013").own_data()
    assert len(data.ids) == 36 and data.paths[0].is_relative_to(base)


def test_a_batch_that_does_not_fit_the_tasks_is_refused(prior_roots: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="more than these tasks have"):
        api.train("metaiqa-prior", hyperparameters={**PRIOR, "roots": roots_option(prior_roots)}, store=tmp_path,
                  **{**PRIOR_TRAINING, "batch_size": 20}, **QUIET)


FINE = {**NETWORK, "eval_every": 2}
FINE_TRAINING = {"steps": 4, "batch_size": 4, "lr": 1e-3, "device": "cpu", "workers": 0}


def _fine_tune(store: FeatureStore, root: Path, prior_id: str, protocol: str = "random-70-10-20",
               **fields: Any) -> list:
    return api.train("metaiqa", dataset="csv", root=root, dataset_options={"labels": "labels.csv",
                     "dataset_name": "memo"}, protocol=protocol, splits=2, store=store,
                     hyperparameters={**FINE, "prior": prior_id, **fields}, **FINE_TRAINING, **QUIET)


@pytest.fixture(scope="module")
def fine_tuned(prior: tuple, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    store, prior_report = prior
    root = labelled_folder(tmp_path_factory.mktemp("memo"))
    reports = _fine_tune(store, root, prior_report.encoder.id)
    return store, root, prior_report, reports


def test_each_split_fine_tunes_from_the_prior_on_its_training_rows_and_selects_on_its_val_rows(fine_tuned: tuple) -> None:
    store, _, prior_report, reports = fine_tuned
    manifest = store.load_manifest("memo")
    splits = store.splits(manifest, ProtocolSpec("random-70-10-20", 2, 0))
    ids = np.asarray(manifest.ids)
    for report, split in zip(reports, splits):
        record = report.encoder
        assert record.scope.split == split.index and record.scope.splits_key == split.key
        data = record.provenance["data"]
        assert set(data["training_ids"]) == set(ids[split.train]) and set(data["validation_ids"]) == set(ids[split.val])
        assert set(data["training_ids"]).isdisjoint(ids[split.test])
        assert set(data["validation_ids"]).isdisjoint(ids[split.test])
        assert record.config["prior"] == prior_report.encoder.id
        assert record.config["selection"]["mode"] == "validation"
        assert record.config["selection"]["step"] in (2, 4)


def test_fine_tuning_starts_from_the_prior_weights(fine_tuned: tuple, tmp_path: Path) -> None:
    _, root, prior_report, _ = fine_tuned
    store = _store_with(prior_report.encoder, tmp_path / "store")
    [report] = api.train("metaiqa", dataset="csv", root=root, dataset_options={"labels": "labels.csv",
                         "dataset_name": "memo"}, protocol="random-70-10-20", splits=2, only_splits=[0], store=store,
                         hyperparameters={**FINE, "prior": prior_report.encoder.id, "selection": "last"},
                         **{**FINE_TRAINING, "lr": 0.0}, **QUIET)  # no update: the export is the start
    start, prior_state = report.encoder.load_state_dict(), prior_report.encoder.load_state_dict()
    assert start.keys() == prior_state.keys()
    weights = [k for k in start if "running" not in k and "num_batches" not in k]
    assert all(torch.equal(start[k], prior_state[k]) for k in weights)


def test_the_head_runs_at_its_own_learning_rate(fine_tuned: tuple, tmp_path: Path) -> None:
    """head_lr_scale 0: the head keeps the prior's weights while the backbone moves."""
    _, root, prior_report, _ = fine_tuned
    store = _store_with(prior_report.encoder, tmp_path / "store")
    [report] = api.train("metaiqa", dataset="csv", root=root, dataset_options={"labels": "labels.csv",
                         "dataset_name": "memo"}, protocol="random-70-10-20", splits=2, only_splits=[0], store=store,
                         hyperparameters={**FINE, "prior": prior_report.encoder.id, "selection": "last",
                                          "head_lr_scale": 0.0}, **FINE_TRAINING, **QUIET)
    trained, prior_state = report.encoder.load_state_dict(), prior_report.encoder.load_state_dict()
    weights = [k for k in trained if "running" not in k and "num_batches" not in k]
    assert all(torch.equal(trained[k], prior_state[k]) for k in weights if k.startswith("head."))
    assert not all(torch.equal(trained[k], prior_state[k]) for k in weights if k.startswith("backbone."))


def test_a_prior_is_refused_on_a_dataset_it_was_meta_trained_on(prior: tuple, prior_roots: dict[str, Path]) -> None:
    store, prior_report = prior
    with pytest.raises(ValueError, match="learned from the MOS of every row of kadid10k"):
        api.train("metaiqa", dataset="kadid10k", root=prior_roots["kadid10k"], protocol="random-70-10-20-by-image", splits=1,
                  store=store, hyperparameters={**FINE, "prior": prior_report.encoder.id}, **FINE_TRAINING, **QUIET)


def test_a_prior_dataset_can_be_the_training_side_of_a_cross_dataset_fit(prior: tuple, prior_roots: dict[str, Path],
                                                                         tmp_path: Path) -> None:
    """train-all has no test rows: fine-tuning on all of KADID from a prior that saw it, and its features there."""
    _, prior_report = prior
    store = _store_with(prior_report.encoder, tmp_path / "store")
    api.train("metaiqa", dataset="kadid10k", root=prior_roots["kadid10k"], protocol="train-all", store=store,
              hyperparameters={**FINE, "prior": prior_report.encoder.id}, **{**FINE_TRAINING, "steps": 1}, **QUIET)
    [report] = api.extract("metaiqa", "kadid10k", root=prior_roots["kadid10k"], protocol="train-all", store=store,
                           device="cpu", workers=0, **QUIET)
    assert store.get(report.feature_set).read().shape == (18, 512)


def test_a_prior_makes_no_features_of_a_dataset_it_was_meta_trained_on(prior: tuple,
                                                                      prior_roots: dict[str, Path]) -> None:
    store, prior_report = prior
    with pytest.raises(RequestError, match="learned from the MOS of every row of tid2013"):
        api.extract("metaiqa", "tid2013", root=prior_roots["tid2013"], weights=f"registry:{prior_report.encoder.id}",
                    store=store, device="cpu", workers=0, **QUIET)
    assert not store.feature_sets("tid2013")


def test_a_prior_of_another_stage_or_network_is_refused(fine_tuned: tuple) -> None:
    store, root, prior_report, reports = fine_tuned
    with pytest.raises(ValueError, match="not metaiqa-prior"):
        _fine_tune(store, root, reports[0].encoder.id)
    with pytest.raises(ValueError, match="is a resnet-tiny network"):
        _fine_tune(store, root, prior_report.encoder.id, backbone="resnet18")


def test_dataloader_workers_get_the_stage_without_the_validation_images_or_the_prior(fine_tuned: tuple) -> None:
    import pickle
    store, root, prior_report, _ = fine_tuned
    stage = MetaiqaStage(**FINE, prior=prior_report.encoder.id)
    stage.attach(store)
    manifest = store.load_manifest("memo")
    split = store.splits(manifest, ProtocolSpec("random-70-10-20", 2, 0))[0]
    stage.prepare(TrainingData.from_split(manifest, split.train, Scope("memo", "random-70-10-20", split.key, 0),
                                          split.val))
    assert stage._validation is not None and stage._prior_state is not None
    copy = pickle.loads(pickle.dumps(stage))
    assert copy._validation is None and copy._prior_state is None and copy._mos_range == stage._mos_range


def test_extraction_writes_one_feature_set_per_split_with_its_scope(fine_tuned: tuple) -> None:
    store, root, _, reports = fine_tuned
    options = {"labels": "labels.csv", "dataset_name": "memo"}
    extracted = api.extract("metaiqa", "csv", root=root, dataset_options=options, protocol="random-70-10-20",
                            splits=2, store=store, device="cpu", workers=0, **QUIET)
    assert len(extracted) == 2
    for report, trained in zip(extracted, reports):
        fs = store.get(report.feature_set)
        assert fs.scope == trained.encoder.scope and fs.read().shape == (40, 512)
    scores = api.extract("metaiqa", "csv", root=root, dataset_options=options, protocol="random-70-10-20", splits=2,
                         store=store, settings={"output": "score"}, device="cpu", workers=0, **QUIET)
    values = store.get(scores[0].feature_set).read()
    assert values.shape == (40, 1) and ((values >= 1) & (values <= 5)).all()  # the csv's MOS scale


def _store_with(record: Any, folder: Path) -> FeatureStore:
    """A fresh store holding only the encoder ``record``."""
    shutil.copytree(record.path, folder / "encoders" / record.name / record.fingerprint)
    return FeatureStore(folder)


def _poisoned_copy(root: Path, target: Path, rows: np.ndarray, manifest: Any) -> Path:
    """The dataset with the given rows' images replaced by noise and their MOS reversed."""
    shutil.copytree(root, target)
    labels = pd.read_csv(target / "labels.csv")
    for row in rows:
        path = manifest.table["path"].iloc[row]
        _image(target / path, seed=1000 + int(row), size=48)
        labels.loc[labels["path"] == path, "mos"] = 6.0 - labels.loc[labels["path"] == path, "mos"]
    labels.to_csv(target / "labels.csv", index=False)
    return target


def test_model_selection_never_reads_test_rows(fine_tuned: tuple, tmp_path: Path) -> None:
    """Poisoned test rows change nothing; poisoned validation rows change the validation SRCC."""
    store, root, prior_report, reports = fine_tuned
    manifest = store.load_manifest("memo")
    split = store.splits(manifest, ProtocolSpec("random-70-10-20", 2, 0))[0]
    runs = {}
    for part in ("test", "val"):
        other = _store_with(prior_report.encoder, tmp_path / f"store-{part}")
        poisoned = _poisoned_copy(root, tmp_path / f"poisoned-{part}", getattr(split, part), manifest)
        [runs[part]] = api.train("metaiqa", dataset="csv", root=poisoned, dataset_options={"labels": "labels.csv",
                                 "dataset_name": "memo"}, protocol="random-70-10-20", splits=2, only_splits=[0],
                                 store=other, hyperparameters={**FINE, "prior": prior_report.encoder.id},
                                 **FINE_TRAINING, **QUIET)
        assert other.splits(other.load_manifest("memo"), ProtocolSpec("random-70-10-20", 2, 0))[0] == split
    clean = reports[0].encoder
    test_run = runs["test"].encoder
    assert test_run.config["selection"] == clean.config["selection"]
    expected, actual = clean.load_state_dict(), test_run.load_state_dict()
    assert [k for k in expected if not torch.equal(expected[k], actual[k])] == []
    assert runs["val"].encoder.config["selection"]["validation_srcc"] != clean.config["selection"]["validation_srcc"]


@pytest.mark.slow
def test_torchrun_deals_the_tasks_and_averages_the_meta_gradient(prior_roots: dict[str, Path], tmp_path: Path) -> None:
    """Two processes (gloo, CPU) with one task each end with the weights of one process with both."""
    args = ["train", "metaiqa-prior", "--roots", roots_option(prior_roots), "--backbone", "resnet-tiny", "--init",
            "random", "--resize", "40", "--crop", "32", "--dropout", "0", "--tasks-per-step", "2", "--support-fraction",
            "0.5", "--steps", "2", "--batch-size", "8", "--lr", "1e-3", "--device", "cpu", "--workers", "0", "-q"]
    iqa_store_cli = str(Path(sys.executable).parent / "iqa-store")
    runs = {"ddp": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                    "--no-python", iqa_store_cli], "single": [iqa_store_cli]}
    weights = {}
    for name, launcher in runs.items():
        store = tmp_path / name
        done = subprocess.run([*launcher, *args, "--store", str(store)], env={**os.environ, "OMP_NUM_THREADS": "1"},
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        [record] = list_encoders(FeatureStore(store))
        assert record.provenance["world_size"] == (2 if name == "ddp" else 1)
        weights[name] = record.load_state_dict()
    learned = [k for k in weights["single"] if "running" not in k and "num_batches" not in k]
    for key in learned:  # BatchNorm's running statistics are each process's own, as in any DDP run
        torch.testing.assert_close(weights["ddp"][key], weights["single"][key], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_clip_plus_metaiqa_on_the_demo_dataset_end_to_end(prior: tuple, tiny_clip: str, tmp_path: Path) -> None:
    """README's MetaIQA walk-through on the embedded demo set (tiny networks), through the CLI."""
    store_folder, prior_report = prior
    runner = CliRunner()
    store = ["--store", str(store_folder.root)]
    steps = [["extract", "-m", "clip-vitb16", "-d", "demo", "--random-init", "-s", f"arch={TINY_CLIP_ARCH}",
              "--workers", "0", "-q", *store],
             ["train", "metaiqa", "-d", "demo", "-p", "random-80-20", "--splits", "2", "--steps", "4",
              "--batch-size", "8", "--prior", prior_report.encoder.id, "--backbone", "resnet-tiny", "--resize", "40",
              "--crop", "32", "--device", "cpu", "--workers", "0", "-q", *store],
             ["extract", "-m", "metaiqa", "-d", "demo", "--protocol", "random-80-20", "--splits", "2",
              "--device", "cpu", "--workers", "0", "-q", *store]]
    for args in steps:
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, (args, result.output)
    fitted = runner.invoke(cli, ["fit", "-f", "clip+metaiqa", "-d", "demo", "--splits", "2", "-q", *store,
                                 "--format", "json"])
    assert fitted.exit_code == 0, fitted.output
    rows = json.loads(fitted.output)["splits"]
    assert {row["combination"] for row in rows} == {"clip+metaiqa"} and {row["split"] for row in rows} == {0, 1}


# --- an independent reference of the extractor (tests/test_extractor_conformance.py) ----------------------

def reference_features(state: dict[str, torch.Tensor], paths: list[Path], size: int) -> np.ndarray:
    """PIL decode, torchvision's resize (bilinear, antialiased) and Normalize, torchvision's ResNet
    forward (its classifier included), then the head's layers written out in eval mode."""
    from torchvision.models.resnet import BasicBlock, ResNet
    from torchvision.transforms.v2 import functional as TF
    backbone = ResNet(BasicBlock, [1, 1, 1, 1], 1000).eval()
    backbone.load_state_dict({k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")})
    head = {k.removeprefix("head."): v.double() for k, v in state.items() if k.startswith("head.")}

    def layer(v: torch.Tensor, n: int) -> torch.Tensor:
        v = v @ head[f"fc{n}.weight"].T + head[f"fc{n}.bias"]
        v = (v - head[f"bn{n}.running_mean"]) / torch.sqrt(head[f"bn{n}.running_var"] + 1e-5)
        v = v * head[f"bn{n}.weight"] + head[f"bn{n}.bias"]
        return torch.where(v > 0, v, head[f"act{n}.weight"] * v)
    rows = []
    for path in paths:
        pixels = TF.to_dtype(TF.pil_to_tensor(Image.open(path).convert("RGB")), torch.float32, scale=True)
        resized = TF.resize(pixels, [size, size], antialias=True).clamp(0, 1)
        normalised = TF.normalize(resized, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        with torch.no_grad():
            rows.append(layer(layer(backbone(normalised[None]).double(), 1), 2)[0].numpy())
    return np.stack(rows)
