"""The CLIP family, HPS v1/v2 and the preprocessing policies, against direct open_clip calls.

Every registered open_clip model runs through the CLI with a tiny architecture of the same
family in its place (``--set arch=...``): the model's own loading code (weights file, nesting
under 'state_dict', the Hugging Face cache, QuickGELU) with a network small enough for CPU tests.
References are computed with open_clip, PIL, numpy and timm only, never through the extractor.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from conftest import TINY_CLIP_ARCH, TINY_CLIP_RN_ARCH, offline_cli
from iqa_store.cli import cli
from iqa_store.extractors import EXTRACTORS, create_extractor
from iqa_store.extractors.embedder import crop_boxes
from iqa_store.store import FeatureStore

pytestmark = pytest.mark.usefixtures("one_torch_thread")

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
# Published embedding sizes and input resolutions (CLIP paper table 20, HPS papers).
PUBLISHED = {"clip-vitb16": (512, 224), "clip-vitb32": (512, 224), "clip-vitl14": (768, 224),
             "clip-vitl14-336": (768, 336), "clip-rn50": (1024, 224), "clip-rn101": (512, 224),
             "clip-rn50x4": (640, 288), "clip-rn50x16": (768, 384), "clip-rn50x64": (1024, 448),
             "hps": (768, 224), "hpsv2": (1024, 224)}
OPEN_CLIP_MODELS = sorted(PUBLISHED)


def _open_clip():
    import open_clip
    open_clip.add_model_config(os.environ["IQA_OPENCLIP_MODEL_CONFIGS"])
    return open_clip


def _tiny_state(arch: str, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return _open_clip().create_model(arch, pretrained=None).state_dict()


def _model(arch: str, state: dict[str, torch.Tensor], quick_gelu: bool) -> torch.nn.Module:
    model = _open_clip().create_model(arch, pretrained=None, force_quick_gelu=quick_gelu)
    model.load_state_dict(state, strict=True)
    return model.eval()


def _normalised(image: Image.Image) -> torch.Tensor:
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)
    return (pixels - torch.tensor(OPENAI_MEAN)[:, None, None]) / torch.tensor(OPENAI_STD)[:, None, None]


def _extract_cli(tmp_path: Path, data: Path, model: str, *args: str) -> np.ndarray:
    store = tmp_path / "S"
    result = CliRunner().invoke(cli, ["extract", "-m", model, "-d", "csv", "--root", str(data), "-o", "labels=labels.csv",
                                      "-o", "dataset_name=toy", "--device", "cpu", "--workers", "0", "-q",
                                      "--batch-size", "5", "--store", str(store), "--format", "json", *args])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["failed"] == 0
    return FeatureStore(store).get(report["feature_set"]).read()


def _paths(data: Path) -> list[Path]:
    return sorted(data.glob("*.jpg"))


@pytest.mark.parametrize("model", OPEN_CLIP_MODELS)
def test_published_dimensions_and_input_sizes(model: str) -> None:
    extractor = create_extractor(model)
    assert (extractor.dim, extractor.input_size()) == PUBLISHED[model]
    assert extractor.settings()["preprocess"]["policy"] == "default"


@pytest.mark.parametrize("model", [m for m in OPEN_CLIP_MODELS if m != "hps"])
def test_every_model_extracts_from_a_weights_file_through_the_cli(model: str, tiny_clip: str, image_dataset: Path,
                                                                 tmp_path: Path) -> None:
    """Each model's own loader on a tiny network of its family; hpsv2's file nests under 'state_dict'."""
    from safetensors.torch import save_file
    arch = TINY_CLIP_RN_ARCH if "-rn" in model else TINY_CLIP_ARCH
    state = _tiny_state(arch, seed=5)
    if model == "hpsv2":
        weights = tmp_path / "HPS_v2.1_compressed.pt"
        torch.save({"state_dict": state}, weights)
    else:
        weights = tmp_path / "tiny.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(weights))
    stored = _extract_cli(tmp_path, image_dataset, model, "--weights", str(weights), "--set", f"arch={arch}")
    size = _open_clip().get_model_config(arch)["vision_cfg"]["image_size"]
    quick_gelu = model != "hpsv2"  # OpenAI's tags use QuickGELU; HPS v2 starts from LAION's ViT-H-14 (GELU)
    preprocess = _open_clip().image_transform(size, is_train=False)
    with torch.no_grad():
        expected = _model(arch, state, quick_gelu).encode_image(
            torch.stack([preprocess(Image.open(p).convert("RGB")) for p in _paths(image_dataset)])).numpy()
    np.testing.assert_allclose(stored, expected, atol=1e-5, rtol=0)


def test_hps_needs_its_checkpoint_and_loads_openai_state_dicts(tiny_clip: str, image_dataset: Path,
                                                                tmp_path: Path) -> None:
    """hpc.pth: an OpenAI-CLIP state dict under 'state_dict' (TorchScript extras such as input_resolution dropped)."""
    result = CliRunner().invoke(cli, ["extract", "-m", "hps", "-d", "csv", "--root", str(image_dataset),
                                      "-o", "labels=labels.csv", "--device", "cpu", "-q", "--store", str(tmp_path / "S"),
                                      "--set", f"arch={TINY_CLIP_ARCH}"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "hps needs --weights FILE" in result.stderr and "tgxs002/align_sd" in result.stderr

    state = _tiny_state(TINY_CLIP_ARCH, seed=9)
    checkpoint = tmp_path / "hpc.pth"
    torch.save({"state_dict": {**state, "input_resolution": torch.tensor(224)}}, checkpoint)
    stored = _extract_cli(tmp_path, image_dataset, "hps", "--weights", str(checkpoint), "--set", f"arch={TINY_CLIP_ARCH}")
    preprocess = _open_clip().image_transform(224, is_train=False)
    with torch.no_grad():
        expected = _model(TINY_CLIP_ARCH, state, quick_gelu=True).encode_image(
            torch.stack([preprocess(Image.open(p).convert("RGB")) for p in _paths(image_dataset)])).numpy()
    np.testing.assert_allclose(stored, expected, atol=1e-5, rtol=0)


def _fake_hub_file(hf_home: Path, repo: str, filename: str) -> Path:
    """Where huggingface_hub's cache keeps ``repo``'s ``filename`` at revision main."""
    folder = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)
    path = folder / "snapshots" / ("0" * 40) / filename
    path.parent.mkdir(parents=True)
    return path


@pytest.mark.slow  # the slow suite
def test_hpsv2_weights_come_from_the_hugging_face_cache(tiny_clip: str, tiny_clip_configs: Path, image_dataset: Path,
                                                          tmp_path: Path) -> None:
    args = ["extract", "-m", "hpsv2", "-d", "csv", "--root", str(image_dataset), "-o", "labels=labels.csv", "--device",
            "cpu", "--workers", "0", "-q", "--store", str(tmp_path / "S"), "--set", f"arch={TINY_CLIP_ARCH}",
            "--format", "json"]
    hf_home = tmp_path / "hf"

    def run(*cli_args: str) -> subprocess.CompletedProcess:
        return offline_cli(list(cli_args), hf_home, IQA_OPENCLIP_MODEL_CONFIGS=str(tiny_clip_configs),
                           OMP_NUM_THREADS="1")
    missing = run(*args)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "xswu/HPSv2" in missing.stderr and "--weights FILE" in missing.stderr and "HF_HUB_OFFLINE" in missing.stderr

    models = run("models", "--format", "json")
    assert {r["name"]: r["weights_present"] for r in json.loads(models.stdout)}["hpsv2"] is False

    state = _tiny_state(TINY_CLIP_ARCH, seed=2)
    torch.save({"state_dict": state}, _fake_hub_file(hf_home, "xswu/HPSv2", "HPS_v2.1_compressed.pt"))
    models = run("models", "--format", "json")
    rows = {r["name"]: r for r in json.loads(models.stdout)}
    assert rows["hpsv2"]["weights_present"] is True and rows["hpsv2"]["dim"] == 1024
    assert set(PUBLISHED) <= set(rows) and all(rows[m]["dim"] == PUBLISHED[m][0] for m in PUBLISHED)

    done = run(*args)
    assert done.returncode == 0, done.stderr
    stored = FeatureStore(tmp_path / "S").get(json.loads(done.stdout)["feature_set"]).read()
    preprocess = _open_clip().image_transform(224, is_train=False)
    with torch.no_grad():
        expected = _model(TINY_CLIP_ARCH, state, quick_gelu=False).encode_image(
            torch.stack([preprocess(Image.open(p).convert("RGB")) for p in _paths(image_dataset)])).numpy()
    np.testing.assert_allclose(stored, expected, atol=1e-5, rtol=0)


# --- preprocessing policies ----------------------------------------------------------------------
@pytest.fixture()
def sized_images(tmp_path: Path) -> Path:
    """Images of three sizes (two share one), so `full` runs several shape groups in one batch."""
    from conftest import write_images
    root = tmp_path / "sized"
    names = []
    for i, size in enumerate([(96, 128), (256, 224), (96, 128), (80, 72)]):
        written = write_images(root / f"s{i}", 1, size=size, seed=i)
        names.append(f"s{i}/{written[0]}")
    import pandas as pd
    pd.DataFrame({"path": names, "mos": np.arange(len(names), dtype=float)}).to_csv(root / "labels.csv", index=False)
    return root


def _images(root: Path) -> list[Image.Image]:
    import pandas as pd
    return [Image.open(root / p).convert("RGB") for p in pd.read_csv(root / "labels.csv")["path"]]


def _vit_full(model: torch.nn.Module, image: Image.Image) -> np.ndarray:
    """ViT at native resolution with timm's resampling of the positional embedding."""
    from timm.layers import resample_abs_pos_embed
    visual = model.visual
    pixels = _normalised(image)[None]
    grid = (pixels.shape[-2] // visual.patch_size[0], pixels.shape[-1] // visual.patch_size[1])
    original = visual.positional_embedding.data.clone()
    visual.positional_embedding.data = resample_abs_pos_embed(original[None], list(grid), list(visual.grid_size),
                                                              num_prefix_tokens=1)[0]
    try:
        with torch.no_grad():
            return model.encode_image(pixels).numpy()[0]
    finally:
        visual.positional_embedding.data = original


def _rn_full(model: torch.nn.Module, image: Image.Image) -> np.ndarray:
    """CLIP ResNet at native resolution, attention pooling with its positional embedding zeroed."""
    pixels = _normalised(image)[None]
    visual = model.visual
    with torch.no_grad():
        x = visual.stem(pixels)
        x = visual.layer4(visual.layer3(visual.layer2(visual.layer1(x))))
        pool = visual.attnpool
        original = pool.positional_embedding.data
        pool.positional_embedding.data = torch.zeros(x.shape[2] * x.shape[3] + 1, original.shape[1])
        try:
            return pool(x).numpy()[0]
        finally:
            pool.positional_embedding.data = original


@pytest.mark.parametrize("arch", [TINY_CLIP_ARCH, TINY_CLIP_RN_ARCH])
def test_full_and_twoscale_policies(arch: str, tiny_clip: str, sized_images: Path, tmp_path: Path) -> None:
    model = _model(arch, _tiny_state(arch, seed=0), quick_gelu=False)
    reference = _vit_full if arch == TINY_CLIP_ARCH else _rn_full
    images = _images(sized_images)
    expected = np.stack([reference(model, image) for image in images])
    stored = _extract_cli(tmp_path, sized_images, f"openclip:{arch}:none", "--random-init", "--policy", "full")
    np.testing.assert_allclose(stored, expected, atol=2e-5, rtol=0)

    halves = [image.resize((image.width // 2, image.height // 2), Image.Resampling.BICUBIC) for image in images]
    two = _extract_cli(tmp_path, sized_images, f"openclip:{arch}:none", "--random-init", "--policy", "twoscale",
                       "-s", "normalize=true")
    assert two.shape == (4, 64)
    unit = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)  # noqa: E731
    np.testing.assert_allclose(two[:, :32], unit(expected), atol=2e-5, rtol=0)
    np.testing.assert_allclose(two[:, 32:], unit(np.stack([reference(model, h) for h in halves])), atol=2e-5, rtol=0)


def test_images_smaller_than_a_patch_fail_by_name(tiny_clip: str, sized_images: Path, tmp_path: Path) -> None:
    from conftest import write_images
    import pandas as pd
    write_images(sized_images / "tiny", 1, size=(40, 20))
    labels = pd.read_csv(sized_images / "labels.csv")
    pd.concat([labels, pd.DataFrame({"path": ["tiny/img000.jpg"], "mos": [9.0]})]).to_csv(sized_images / "labels.csv",
                                                                                            index=False)
    result = CliRunner().invoke(cli, ["extract", "-m", tiny_clip, "-d", "csv", "--root", str(sized_images), "-o",
                                      "labels=labels.csv", "--workers", "0", "-q", "--random-init", "--policy", "twoscale",
                                      "--store", str(tmp_path / "S"), "--format", "json"])
    report = json.loads(result.stdout)
    assert report["failed"] == 1 and report["rows"] == 5
    assert report["failures"][0]["path"].endswith("tiny/img000.jpg")
    assert "20x40 px at this scale is smaller than the 32 px" in report["failures"][0]["reason"]


def test_vit_full_policy_at_the_training_size_is_the_plain_model(tiny_clip: str, tmp_path: Path) -> None:
    """A 224 x 224 image at native resolution: no resampling, exactly open_clip on the normalised image."""
    from conftest import write_images
    import pandas as pd
    root = tmp_path / "square"
    names = write_images(root, 3, size=(224, 224))
    pd.DataFrame({"path": names, "mos": [1.0, 2.0, 3.0]}).to_csv(root / "labels.csv", index=False)
    model = _model(TINY_CLIP_ARCH, _tiny_state(TINY_CLIP_ARCH, seed=0), quick_gelu=False)
    with torch.no_grad():
        expected = model.encode_image(torch.stack([_normalised(Image.open(root / n).convert("RGB")) for n in names]))
    stored = _extract_cli(tmp_path, root, tiny_clip, "--random-init", "--policy", "full")
    np.testing.assert_allclose(stored, expected.numpy(), atol=1e-5, rtol=0)


def test_multicrop_policy_is_the_mean_over_crops(tiny_clip: str, sized_images: Path, tmp_path: Path) -> None:
    model = _model(TINY_CLIP_ARCH, _tiny_state(TINY_CLIP_ARCH, seed=0), quick_gelu=False)
    expected = []
    for image in _images(sized_images):
        if min(image.size) < 224:  # enlarged until a crop fits
            scale = 224 / min(image.size)
            image = image.resize((max(224, round(image.width * scale)), max(224, round(image.height * scale))),
                                 Image.Resampling.BICUBIC)
        crops = [image.crop((x, y, x + 224, y + 224)) for x, y in crop_boxes(image.width, image.height, 224, 3)]
        with torch.no_grad():
            expected.append(model.encode_image(torch.stack([_normalised(c) for c in crops])).mean(0).numpy())
    stored = _extract_cli(tmp_path, sized_images, tiny_clip, "--random-init", "--policy", "multicrop:3")
    np.testing.assert_allclose(stored, np.stack(expected), atol=2e-5, rtol=0)


def test_crop_boxes_cover_the_image_evenly() -> None:
    assert crop_boxes(224, 224, 224, 1) == [(0, 0)]
    assert crop_boxes(1024, 768, 224, 1) == [(400, 272)]  # centred
    boxes = crop_boxes(1024, 768, 224, 4)  # a 2 x 2 grid: the four corners
    assert sorted(boxes) == [(0, 0), (0, 544), (800, 0), (800, 544)]
    five = crop_boxes(1024, 768, 224, 5)
    assert len(set(five)) == 5 and all(0 <= x <= 800 and 0 <= y <= 544 for x, y in five)
    assert min(x for x, _ in five) == 0 and max(x for x, _ in five) == 800


def test_policies_are_part_of_the_fingerprint_and_validated(tiny_clip: str) -> None:
    prints = {policy: create_extractor(tiny_clip, random_init=True, policy=policy).fingerprint()
              for policy in ("default", "full", "multicrop:5", "multicrop:3", "twoscale")}
    assert len(set(prints.values())) == 5
    assert create_extractor(tiny_clip, random_init=True, policy="twoscale").dim == 64
    for bad in ("multicrop", "multicrop:0", "centre", "full:2"):
        with pytest.raises(Exception, match="policy"):
            create_extractor(tiny_clip, policy=bad)


def test_every_registered_open_clip_model_is_listed() -> None:
    assert {m for m in EXTRACTORS.names() if m.startswith(("clip-", "hps"))} == set(PUBLISHED)


def test_jpeg_draft_decodes_at_a_reduced_dct_scale(tiny_clip: str, tmp_path: Path) -> None:
    """jpeg_draft: Pillow's draft decode (here 1024x768 -> 512x384) then open_clip's own transform."""
    from conftest import write_images
    import pandas as pd
    root = tmp_path / "koniq-sized"
    names = write_images(root, 3, size=(768, 1024))
    pd.DataFrame({"path": names, "mos": [1.0, 2.0, 3.0]}).to_csv(root / "labels.csv", index=False)
    model = _model(TINY_CLIP_ARCH, _tiny_state(TINY_CLIP_ARCH, seed=0), quick_gelu=False)
    preprocess = _open_clip().image_transform(224, is_train=False)
    drafted = []
    for name in names:
        image = Image.open(root / name)
        image.draft("RGB", (224, 224))
        assert image.size == (512, 384)
        drafted.append(preprocess(image.convert("RGB")))
    with torch.no_grad():
        expected = model.encode_image(torch.stack(drafted)).numpy()
    stored = _extract_cli(tmp_path, root, tiny_clip, "--random-init", "-s", "jpeg_draft=true")
    np.testing.assert_allclose(stored, expected, atol=1e-5, rtol=0)
    full = _extract_cli(tmp_path, root, tiny_clip, "--random-init")
    assert np.abs(full - stored).max() > 1e-4  # a different decode: a different feature set
    assert create_extractor(tiny_clip, random_init=True, jpeg_draft=True).fingerprint() != \
        create_extractor(tiny_clip, random_init=True).fingerprint()
    with pytest.raises(Exception, match="jpeg_draft"):
        create_extractor(tiny_clip, jpeg_draft=True, policy="full")


def test_device_decode_runs_the_default_transform_as_tensor_operations(tiny_clip: str, tmp_path: Path) -> None:
    """device_decode on CPU (the CUDA path differs only in the device): torchvision's JPEG decoder and
    the transform as tensor ops; PNGs and truncated JPEGs go through Pillow in the worker."""
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms import v2
    from conftest import write_images
    import pandas as pd
    root = tmp_path / "mixed"
    names = write_images(root, 4, size=(300, 400))
    Image.open(root / names[3]).save(root / "img003.png")
    names[3] = "img003.png"
    (root / "broken.jpg").write_bytes((root / names[0]).read_bytes()[:2000])  # truncated: no end-of-image marker
    pd.DataFrame({"path": names + ["broken.jpg"], "mos": [1.0, 2.0, 3.0, 4.0, 5.0]}).to_csv(root / "labels.csv",
                                                                                         index=False)
    steps = v2.Compose([v2.ToDtype(torch.float32, scale=True),
                        v2.Resize(224, interpolation=v2.InterpolationMode.BICUBIC, antialias=True), v2.CenterCrop(224)])
    inputs = [(steps(decode_image(str(root / n), mode=ImageReadMode.RGB)).clamp(0, 1)
               - torch.tensor(OPENAI_MEAN)[:, None, None]) / torch.tensor(OPENAI_STD)[:, None, None] for n in names]
    model = _model(TINY_CLIP_ARCH, _tiny_state(TINY_CLIP_ARCH, seed=0), quick_gelu=False)
    with torch.no_grad():
        expected = model.encode_image(torch.stack(inputs)).numpy()

    store = tmp_path / "S"
    result = CliRunner().invoke(cli, ["extract", "-m", tiny_clip, "-d", "csv", "--root", str(root), "-o",
                                      "labels=labels.csv", "--workers", "0", "-q", "--random-init", "-s",
                                      "device_decode=true", "--store", str(store), "--format", "json"])
    report = json.loads(result.stdout)
    assert report["failed"] == 1 and report["failures"][0]["path"].endswith("broken.jpg")
    assert "cannot decode" in report["failures"][0]["reason"]
    stored = FeatureStore(store).get(report["feature_set"]).read()
    np.testing.assert_allclose(stored[:4], expected, atol=1e-5, rtol=0)
    assert np.isnan(stored[4]).all()

    preprocess = _open_clip().image_transform(224, is_train=False)  # the Pillow path, for closeness
    with torch.no_grad():
        pillow = model.encode_image(torch.stack([preprocess(Image.open(root / n).convert("RGB")) for n in names])).numpy()
    cosine = (stored[:4] * pillow).sum(1) / np.linalg.norm(stored[:4], axis=1) / np.linalg.norm(pillow, axis=1)
    assert cosine.min() > 0.999
    with pytest.raises(Exception, match="device_decode"):
        create_extractor(tiny_clip, device_decode=True, policy="twoscale")
