"""The Re-IQA extractors against the reference extraction, and their weight sources and errors.

The reference is written here with torchvision and PIL alone, as avinabsaha/ReIQA's
``demo_*_aware_feats.py`` compute it (PIL ``resize((w // 2, h // 2))`` with Pillow's default
filter, ``ToTensor``, ``Normalize`` for the content encoder, the ResNet without its fc, and the
two feature vectors concatenated), never through the extractor.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner, Result
from PIL import Image
from torchvision import transforms
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from conftest import PicklePayload, one_line_error, write_images
from iqa_store import api
from iqa_store.cli import cli
from iqa_store.extractors import ExtractorError, RunOptions, create_extractor
from iqa_store.extractors.reiqa import backbone_state, matching_backbone
from iqa_store.store import FeatureStore, save_encoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_LAYERS = [1, 1, 1, 1]  # the layout of the 'resnet-tiny' backbone: one basic block per stage


def tiny_resnet() -> ResNet:
    model = ResNet(BasicBlock, TINY_LAYERS)
    model.fc = torch.nn.Identity()  # Re-IQA's encoder has no classifier
    return model


def random_state(seed: int) -> dict[str, torch.Tensor]:
    """A tiny ResNet with torchvision's initialisation and random BatchNorm affine parameters and
    statistics, so that a weight or buffer that is not loaded changes the features."""
    torch.manual_seed(seed)
    model = tiny_resnet()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            for tensor, low, spread in ((module.weight, 0.5, 1.0), (module.bias, -0.1, 0.2),
                                        (module.running_mean, -0.1, 0.2), (module.running_var, 0.5, 1.0)):
                tensor.data = low + spread * torch.rand(tensor.shape)
    return model.state_dict()


def reference_features(state: dict[str, torch.Tensor], paths: list[Path], normalize: bool) -> np.ndarray:
    model = tiny_resnet()
    model.load_state_dict(state, strict=True)
    model.eval()
    steps = [transforms.ToTensor()]
    if normalize:
        steps.append(transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]))
    transform = transforms.Compose(steps)
    rows = []
    with torch.no_grad():
        for path in paths:
            image = Image.open(path).convert("RGB")
            half = image.resize((image.size[0] // 2, image.size[1] // 2))
            full_features = model(transform(image).unsqueeze(0))
            half_features = model(transform(half).unsqueeze(0))
            rows.append(torch.cat((full_features, half_features), dim=1)[0].numpy())
    return np.stack(rows)


def published_checkpoint(state: dict[str, torch.Tensor], path: Path, **extra: object) -> Path:
    """The layout of reiqa_ckpts/*_aware_r50.pth: a DataParallel MoCo model under 'model'."""
    model = {f"module.encoder.{key}": value for key, value in state.items()}
    model.update({"module.head.0.weight": torch.randn(32, 512), "module.head.0.bias": torch.zeros(32),
                  "module.head.2.weight": torch.randn(16, 32), "module.head.2.bias": torch.zeros(16)})
    torch.save({"model": model, "epoch": 25, "optimizer": {"state": {}, "param_groups": [{"lr": 0.6, "params": [0]}]},
                **extra}, path)
    return path


@pytest.fixture()
def mixed_sizes(tmp_path: Path) -> Path:
    """Eight images of three sizes (odd ones too, for the floor of the half scale), in one CSV dataset."""
    root = tmp_path / "data"
    names = [f"a/{n}" for n in write_images(root / "a", 3, size=(64, 80))]
    names += [f"b/{n}" for n in write_images(root / "b", 3, size=(65, 91), seed=1)]
    names += [f"c/{n}" for n in write_images(root / "c", 2, size=(72, 72), seed=2)]
    order = [0, 3, 6, 1, 4, 7, 2, 5]  # interleaved: every batch of 4 holds several sizes
    pd.DataFrame({"path": [names[i] for i in order], "mos": np.arange(8.0)}).to_csv(root / "labels.csv", index=False)
    return root


def paths_of(root: Path) -> list[Path]:
    return [root / p for p in pd.read_csv(root / "labels.csv")["path"]]


def run_extract(root: Path, store: Path, *options: str) -> Result:
    return CliRunner().invoke(cli, ["extract", "-d", "csv", "--root", str(root), "-o", "labels=labels.csv",
                                    "-o", "dataset_name=toy", "--device", "cpu", "--workers", "0", "--batch-size", "4",
                                    "-q", "--store", str(store), "--format", "json", *options])


def extracted(root: Path, store: Path, *options: str):
    result = run_extract(root, store, *options)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["status"] == "complete" and report["failed"] == 0
    return FeatureStore(store).get(report["feature_set"])


@pytest.mark.parametrize(("model", "normalize"), [("reiqa-quality", False), ("reiqa-content", True)])
def test_published_checkpoint_matches_the_reference_extraction(model: str, normalize: bool, mixed_sizes: Path,
                                                               tmp_path: Path) -> None:
    state = random_state(seed=1)
    checkpoint = published_checkpoint(state, tmp_path / "aware_tiny.pth")
    fs = extracted(mixed_sizes, tmp_path / "S", "-m", model, "--weights", str(checkpoint))

    expected = reference_features(state, paths_of(mixed_sizes), normalize)
    stored = fs.read()
    assert stored.shape == (8, 2 * 512) == expected.shape and stored.dtype == np.float32
    np.testing.assert_allclose(stored, expected, atol=1e-5, rtol=1e-5)
    assert np.abs(stored[:, 512:] - stored[:, :512]).max() > 1e-3  # the half-scale half is not a copy
    # the other normalisation gives other numbers: the choice is really applied
    assert np.abs(reference_features(state, paths_of(mixed_sizes)[:1], not normalize) - expected[:1]).max() > 1e-3

    inputs = fs.attrs["fingerprint_inputs"]
    assert inputs["weights"] == {"file": "aware_tiny.pth", "sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest()}
    assert inputs["settings"]["backbone"] == "resnet-tiny"  # inferred from the checkpoint's keys and shapes
    assert inputs["settings"]["preprocess"]["normalization"] == ("imagenet" if normalize else "none")


def registry_encoder(store: Path, seed: int, stage: str, normalization: str):
    state = random_state(seed)
    weights = {f"backbone.{key}": value for key, value in state.items()}
    weights["head.0.weight"] = torch.randn(16, 512)
    config = {"stage": stage, "backbone": "resnet-tiny", "feature_dim": 512, "input_normalization": normalization}
    return save_encoder(FeatureStore(store), stage, weights, config, {"seed": seed}), state


def test_registry_encoders_by_id(mixed_sizes: Path, tmp_path: Path) -> None:
    store = tmp_path / "S"
    first, first_state = registry_encoder(store, 1, "reiqa-quality", "none")
    second, second_state = registry_encoder(store, 2, "reiqa-quality", "none")
    paths = paths_of(mixed_sizes)

    sets = []
    for record, state in ((first, first_state), (second, second_state)):
        encoder_id = f"{record.name}/{record.fingerprint[:6]}"  # a fingerprint prefix is enough
        fs = extracted(mixed_sizes, store, "-m", "reiqa-quality", "--encoder", encoder_id)
        np.testing.assert_allclose(fs.read(), reference_features(state, paths, normalize=False), atol=1e-5, rtol=1e-5)
        inputs = fs.attrs["fingerprint_inputs"]
        assert inputs["weights"] == {"file": "model.safetensors", "sha256": record.weights_sha256}
        assert str(store) not in json.dumps(inputs)
        sets.append(fs)
    assert sets[0].fingerprint != sets[1].fingerprint

    # the store is where an encoder is found, not part of its identity: a copy elsewhere gives the same set
    elsewhere = tmp_path / "S2"
    shutil.copytree(first.path, elsewhere / "encoders" / first.name / first.fingerprint)
    here = api.build_extractor("reiqa-quality", weights=f"registry:{first.id}", store=store)
    there = api.build_extractor("reiqa-quality", weights=f"registry:{first.id}", store=elsewhere)
    assert here.fingerprint() == there.fingerprint()

    # a content encoder: its config's ImageNet normalisation is applied
    content, content_state = registry_encoder(store, 3, "reiqa-content", "imagenet")
    report = api.extract("reiqa-content", "csv", root=mixed_sizes, store=store, device="cpu", workers=0, batch_size=4,
                         encoder=content.name, progress=False, log=lambda _: None,
                         dataset_options={"labels": "labels.csv", "dataset_name": "toy"})
    np.testing.assert_allclose(FeatureStore(store).get(report.feature_set).read(),
                               reference_features(content_state, paths, normalize=True), atol=1e-5, rtol=1e-5)

    # an encoder given to the other extractor is refused, naming both stages
    message = one_line_error(run_extract(mixed_sizes, store, "-m", "reiqa-quality", "--encoder", content.name))
    assert content.id in message and "read by extractor 'reiqa-content', not 'reiqa-quality'" in message
    message = one_line_error(run_extract(mixed_sizes, store, "-m", "reiqa-quality", "--encoder", "absent"))
    assert "'absent'" in message and "0 registered encoders" in message


def test_unsafe_missing_and_ill_fitting_files_are_clear_errors(mixed_sizes: Path, tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    pickled = published_checkpoint(random_state(0), tmp_path / "pickled.pth", opt=PicklePayload(marker))
    message = one_line_error(run_extract(mixed_sizes, tmp_path / "S", "-m", "reiqa-quality", "--weights", str(pickled)))
    assert message.startswith(f"error: refusing to load {pickled}") and "weights_only=True" in message
    assert not marker.exists()

    absent = tmp_path / "reiqa_ckpts" / "quality_aware_r50.pth"
    message = one_line_error(run_extract(mixed_sizes, tmp_path / "S", "-m", "reiqa-quality", "--weights", str(absent)))
    assert message.startswith(f"error: weights not found: {absent} (")

    state = random_state(0)
    state["layer9.weight"] = state.pop("layer1.0.conv1.weight")
    renamed = published_checkpoint(state, tmp_path / "renamed.pth")
    with pytest.raises(ExtractorError, match="renamed.pth does not fit any backbone") as error:
        create_extractor("reiqa-quality", weights=str(renamed))
    assert "missing keys (1): ['layer1.0.conv1.weight']" in str(error.value)
    assert "unexpected keys (1): ['layer9.weight']" in str(error.value)

    tiny = published_checkpoint(random_state(0), tmp_path / "tiny.pth")
    with pytest.raises(ExtractorError, match=r"tiny.pth does not fit backbone resnet18; .*missing keys \(\d+\)"):
        create_extractor("reiqa-content", weights=str(tiny), backbone="resnet18")

    no_model = tmp_path / "training-state.pth"
    torch.save({"epoch": 3, "optimizer": {"state": {}}}, no_model)
    with pytest.raises(ExtractorError, match="training-state.pth is neither a state dict nor a checkpoint"):
        create_extractor("reiqa-quality", weights=str(no_model))


def test_weight_sources(tmp_path: Path) -> None:
    bare = tmp_path / "bare.pt"  # torchvision keys, no prefix, no 'model'
    torch.save(random_state(0), bare)
    assert create_extractor("reiqa-quality", weights=str(bare)).backbone == "resnet-tiny"

    with pytest.raises(ExtractorError, match="--weights registry:NAME.*--weights FILE.*quality_aware_r50.pth"):
        create_extractor("reiqa-quality").fingerprint()
    with pytest.raises(ExtractorError, match="one of --weights or --random-init"):
        create_extractor("reiqa-content", weights=str(bare), random_init=True)
    with pytest.raises(ValueError, match=r"does not take option\(s\) \['weights'\]"):
        api.build_extractor("brisque", weights=str(bare), store=FeatureStore(tmp_path / "S"))

    assert create_extractor("reiqa-quality", random_init=True).dim == 4096  # ResNet-50: 2048 + 2048
    assert create_extractor("reiqa-content", random_init=True, backbone="resnet-tiny").dim == 1024


def test_the_published_resnet50_layout_is_recognised() -> None:
    with torch.device("meta"):  # shapes only
        model = ResNet(Bottleneck, [3, 4, 6, 3])
    model.fc = torch.nn.Identity()
    state = {f"encoder.{key}": value for key, value in model.state_dict().items()}
    assert matching_backbone(backbone_state(state), "r50.pth") == "resnet50"


def test_workers_get_settings_without_weights(mixed_sizes: Path, tmp_path: Path) -> None:
    checkpoint = published_checkpoint(random_state(0), tmp_path / "tiny.pth")
    extractor = create_extractor("reiqa-content", weights=str(checkpoint))
    extractor.prepare(RunOptions())
    copy = pickle.loads(pickle.dumps(extractor))
    assert copy._model is None and copy._state is None
    path = paths_of(mixed_sizes)[1]  # 65 x 91 px: half scale is 32 x 45
    for ours, theirs in zip(copy.load_item(path), extractor.load_item(path)):
        assert torch.equal(ours, theirs)
    assert copy.load_item(path)[1].shape == (3, 32, 45)
