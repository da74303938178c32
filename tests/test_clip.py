"""The open_clip extractor against direct open_clip calls, and its weight loading rules.

The reference is computed here with open_clip alone (``create_model`` + ``load_state_dict`` +
open_clip's own eval transform), never through ``OpenClipExtractor``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from conftest import PicklePayload, assert_pickle_refused, offline_cli, the_error_line
from iqa_store.cli import cli
from iqa_store.datasets import load_manifest
from iqa_store.extraction.runner import extract
from iqa_store.extractors import ExtractorError, RunOptions, create_extractor
from iqa_store.extractors.clip import OpenClipExtractor, load_state_dict
from iqa_store.store import DONE, FeatureStore

ARCH = "TinyViT-test"
CHUNK_BYTES = 4 * 32 * 4  # 4 rows per chunk at dim 32


def _open_clip():
    import open_clip
    open_clip.add_model_config(os.environ["IQA_OPENCLIP_MODEL_CONFIGS"])
    return open_clip


def _state_dict(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return _open_clip().create_model(ARCH, pretrained=None).state_dict()


def _direct(state: dict[str, torch.Tensor], paths: list[Path], quick_gelu: bool = False) -> np.ndarray:
    """CLIP image embeddings computed by open_clip alone."""
    open_clip = _open_clip()
    model = open_clip.create_model(ARCH, pretrained=None, force_quick_gelu=quick_gelu)
    model.load_state_dict(state, strict=True)
    model.eval()
    preprocess = open_clip.image_transform(224, is_train=False)  # open_clip's OpenAI defaults
    batch = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in paths])
    with torch.no_grad():
        return model.encode_image(batch).float().numpy()


def _extract(manifest, extractor, store_root: Path):
    store = FeatureStore(store_root, chunk_bytes=CHUNK_BYTES)
    report = extract(manifest, extractor, store, RunOptions(batch_size=4), progress=False, log=lambda _: None)
    assert report.status == "complete" and not report.failures
    return store.get(report.feature_set), report


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture()
def toy(tiny_clip: str, image_dataset: Path):
    return load_manifest("csv", image_dataset, labels="labels.csv", dataset_name="toy")


def test_random_init_matches_direct_open_clip(tiny_clip: str, toy, tmp_path: Path) -> None:
    fs, report = _extract(toy, create_extractor(tiny_clip, random_init=True, seed=0), tmp_path / "store")
    assert report.computed == len(toy) == 24 and fs.n_chunks == 6
    assert fs.ids == toy.ids
    expected = _direct(_state_dict(0), toy.paths)
    stored = fs.read()
    assert stored.shape == (24, 32) and stored.dtype == np.float32
    assert (fs.status() == DONE).all()
    np.testing.assert_allclose(stored, expected, atol=1e-5, rtol=0)
    assert np.abs(stored).max() > 1e-2  # not trivially zero

    # normalize=True stores the L2-normalised embedding, as its own set
    fs_n, _ = _extract(toy, create_extractor(tiny_clip, random_init=True, seed=0, normalize=True), tmp_path / "store")
    assert fs_n.path != fs.path
    np.testing.assert_allclose(fs_n.read(), expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-5, rtol=0)


def test_weights_files_match_direct_open_clip(tiny_clip: str, toy, tmp_path: Path) -> None:
    from safetensors.torch import save_file
    state = _state_dict(seed=7)
    expected = _direct(state, toy.paths)

    st_file = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(st_file))
    pt_file = tmp_path / "tiny.pt"  # a training checkpoint: DataParallel prefixes under 'state_dict'
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, pt_file)

    sets = []
    for path in (st_file, pt_file):
        fs, _ = _extract(toy, create_extractor(tiny_clip, weights=str(path)), tmp_path / "store")
        np.testing.assert_allclose(fs.read(), expected, atol=1e-5, rtol=0)
        assert fs.attrs["fingerprint_inputs"]["weights"]["file"] == path.name
        sets.append(fs)
    assert sets[0].fingerprint != sets[1].fingerprint  # different files, different sets
    # the weights are really used: a random init with another seed gives other numbers
    assert np.abs(_direct(_state_dict(0), toy.paths[:2]) - expected[:2]).max() > 1e-3

    # the loader itself: prefixes stripped, the same tensors either way
    loaded_pt, loaded_st = load_state_dict(str(pt_file)), load_state_dict(str(st_file))
    assert sorted(loaded_pt) == sorted(state) == sorted(loaded_st)
    assert all(torch.equal(loaded_pt[k], state[k]) and torch.equal(loaded_st[k], state[k]) for k in state)


def test_pickle_checkpoint_is_refused(tiny_clip: str, image_dataset: Path, tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    bad = tmp_path / "bad.pt"
    torch.save({"state_dict": _state_dict(0), "extra": PicklePayload(marker)}, bad)
    with pytest.raises(ExtractorError, match="weights_only"):
        load_state_dict(str(bad))
    assert not marker.exists()

    result = CliRunner().invoke(cli, ["extract", "-m", tiny_clip, "-d", "csv", "--root", str(image_dataset),
                                      "-o", "labels=labels.csv", "-o", "dataset_name=toy", "--device", "cpu",
                                      "--workers", "0", "-q", "--weights", str(bad), "--store", str(tmp_path / "S")])
    assert_pickle_refused(result, marker)


def test_weights_that_do_not_fit_the_architecture(tiny_clip: str, toy, tmp_path: Path) -> None:
    from safetensors.torch import save_file
    wrong = tmp_path / "wrong.safetensors"
    save_file({"visual.proj": torch.zeros(3, 3), "unrelated": torch.ones(2)}, str(wrong))
    with pytest.raises(ExtractorError, match="does not fit TinyViT-test"):
        _extract(toy, create_extractor(tiny_clip, weights=str(wrong)), tmp_path / "store")
    with pytest.raises(ExtractorError, match="--weights file not found"):
        create_extractor(tiny_clip, weights=str(tmp_path / "absent.safetensors"))


def test_quick_gelu_follows_the_pretrained_tag(tiny_clip: str, toy, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenAI tags (quick_gelu=True in open_clip) must run with QuickGELU, as open_clip's -quickgelu models do."""
    from safetensors.torch import save_file
    open_clip = _open_clip()
    from open_clip import pretrained as registry
    monkeypatch.setitem(registry._PRETRAINED, ARCH, {"qg": registry._pcfg(hf_hub="nobody/tiny-qg", quick_gelu=True)})
    state = _state_dict(seed=3)
    weights = tmp_path / "tiny-qg.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(weights))

    extractor = OpenClipExtractor(name="openclip-TinyViT-test-qg", arch=ARCH, pretrained="qg", weights=str(weights))
    assert extractor.settings()["quick_gelu"] is True
    assert create_extractor(tiny_clip, random_init=True).settings()["quick_gelu"] is False
    assert open_clip.get_pretrained_cfg("ViT-B-16", "openai").get("quick_gelu") is True
    assert create_extractor("clip-vitb16").settings()["quick_gelu"] is True

    fs, _ = _extract(toy, extractor, tmp_path / "store")
    quick = _direct(state, toy.paths, quick_gelu=True)
    np.testing.assert_allclose(fs.read(), quick, atol=1e-5, rtol=0)
    assert np.abs(_direct(state, toy.paths) - quick).max() > 1e-4  # GELU would give other numbers


def test_missing_weights_offline_names_what_to_download(image_dataset: Path, tmp_path: Path) -> None:
    result = offline_cli(["extract", "--model", "clip-vitb16", "-d", "csv", "--root", str(image_dataset), "-o",
                          "labels=labels.csv", "-o", "dataset_name=toy", "--device", "cpu", "--workers", "0", "-q",
                          "--store", str(tmp_path / "S")], tmp_path / "empty-hf-home", IQA_OPENCLIP_MODEL_CONFIGS=None)
    message = the_error_line(result)
    assert "timm/vit_base_patch16_clip_224.openai" in message
    assert "HF_HUB_OFFLINE" in message and "--weights FILE" in message
    assert result.stdout == ""
