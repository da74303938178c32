"""SLIQUE's pieces against independent references: InfoNCE by explicit loops, the joint loss,
OLA overlaps, the saliency crop, what each ablation trains, the networks and the checkpoint
layouts the extractor reads."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms
from torchvision.models.resnet import BasicBlock, ResNet

from iqa_store.extractors import ExtractorError, RunOptions, create_extractor
from iqa_store.nets.slique import build_text_tower, build_trunk, tokenize, trunk_dim, trunk_state
from iqa_store.train.crops import Box
from iqa_store.train.slique import SliqueStage, info_nce, saliency, salient_box
from iqa_store.train.stage import Example

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"backbone": "resnet-tiny", "width": 8, "embed_dim": 16, "head_dim": 16, "text_width": 32, "text_layers": 1,
        "text_heads": 2, "context_length": 16, "crop": 32}


def _unit(rows: int, dim: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(rows, dim, generator=generator, dtype=torch.float64), dim=1)


def _hand_info_nce(q: np.ndarray, k: np.ndarray, tau: float, not_negative: np.ndarray | None = None) -> float:
    """Eq. 1 by explicit loops: -log exp(q.k+/tau) / sum over the dictionary, averaged over queries."""
    total = 0.0
    for i in range(len(q)):
        positive = math.exp(sum(q[i, d] * k[i, d] for d in range(q.shape[1])) / tau)
        denominator = 0.0
        for j in range(len(k)):
            if j != i and not_negative is not None and not_negative[i, j]:
                continue
            denominator += math.exp(sum(q[i, d] * k[j, d] for d in range(q.shape[1])) / tau)
        total += -math.log(positive / denominator)
    return total / len(q)


def test_info_nce_equals_the_hand_computed_loss() -> None:
    q, k = _unit(5, 4, 0), _unit(5, 4, 1)
    expected = _hand_info_nce(q.numpy(), k.numpy(), 0.1)
    assert float(info_nce(q, k, 0.1)) == pytest.approx(expected, rel=1e-12)
    mask = torch.zeros(5, 5, dtype=torch.bool)
    mask[0, 3] = mask[2, 1] = mask[4, 4] = True  # the diagonal entry is ignored
    expected_masked = _hand_info_nce(q.numpy(), k.numpy(), 0.1, mask.numpy())
    assert float(info_nce(q, k, 0.1, mask)) == pytest.approx(expected_masked, rel=1e-12)
    assert expected_masked < expected  # fewer negatives, lower loss


def test_both_branch_losses_and_the_joint_loss_equal_hand_computation() -> None:
    stage = SliqueStage(**TINY, alpha=0.7, temperature=0.1)
    first, second, image, text = _unit(4, 6, 2), _unit(4, 6, 3), _unit(4, 6, 4), _unit(4, 6, 5)
    own = torch.eye(4, dtype=torch.bool)
    own[1, 2] = True  # the text drawn for image 2 is also one of image 1's descriptions
    losses = stage.branch_losses({"first": first, "second": second, "image": image, "text": text}, own)
    ii = _hand_info_nce(first.numpy(), second.numpy(), 0.1)
    it = _hand_info_nce(image.numpy(), text.numpy(), 0.1, own.numpy())
    assert float(losses["image-image"]) == pytest.approx(ii, rel=1e-12)
    assert float(losses["image-text"]) == pytest.approx(it, rel=1e-12)


def _coordinate_image(height: int, width: int) -> torch.Tensor:
    """Channel 0 = row / 1000, channel 1 = column / 1000: a crop's pixels say where it was cut."""
    rows = torch.arange(height, dtype=torch.float32)[:, None].expand(height, width) / 1000
    cols = torch.arange(width, dtype=torch.float32)[None, :].expand(height, width) / 1000
    return torch.stack([rows, cols, torch.zeros(height, width)])


def _box_of(crop: torch.Tensor) -> Box:
    return Box(round(float(crop[0, 0, 0]) * 1000), round(float(crop[1, 0, 0]) * 1000), crop.shape[-1])


@pytest.mark.parametrize(("crop", "height", "width"), [(64, 160, 200), (224, 384, 512)])  # 224 on 512x384: the paper's
def test_ola_crops_of_a_sample_overlap_within_the_bounds(crop: int, height: int, width: int) -> None:
    stage = SliqueStage(**{**TINY, "crop": crop}, objective="image-image", augment="none")  # the geometry alone
    image = _coordinate_image(height, width)
    fractions = []
    for seed in range(40):
        sample = stage.sample(Example(image, "x"), torch.Generator().manual_seed(seed))
        first, second = _box_of(sample.pairs[0]), _box_of(sample.pairs[1])
        for pixels, box in ((sample.pairs[0], first), (sample.pairs[1], second)):  # the crop is that box's pixels
            torch.testing.assert_close(pixels, image[:, box.top:box.top + crop, box.left:box.left + crop])
        fractions.append(first.overlap_fraction(second))
    assert 0.10 - 1e-9 <= min(fractions) and max(fractions) <= 0.30 + 1e-9
    assert max(fractions) - min(fractions) > 0.1  # drawn over the range, not one fixed layout


def _blob_image(top: int, left: int, size: int = 24, shape: tuple[int, int] = (192, 256)) -> torch.Tensor:
    """A smooth grey gradient with faint noise and one small square of strong texture: the salient region."""
    height, width = shape
    generator = torch.Generator().manual_seed(top * 1000 + left)
    image = 0.4 + 0.1 * torch.linspace(0, 1, width).repeat(height, 1) + 0.03 * torch.randn(height, width,
                                                                                            generator=generator)
    image[top:top + size, left:left + size] = torch.rand(size, size, generator=generator)
    return image[None].expand(3, height, width).contiguous()


@pytest.mark.parametrize(("top", "left"), [(20, 200), (150, 30), (90, 120), (0, 0), (160, 230)])
def test_the_saliency_crop_holds_the_salient_region(top: int, left: int) -> None:
    image = _blob_image(top, left)
    box = salient_box(image, 64)
    assert box.top <= top and top + 24 <= box.top + 64 and box.left <= left and left + 24 <= box.left + 64
    smap = saliency(image)
    peak = np.unravel_index(np.argmax(smap), smap.shape)  # the map itself peaks on the square
    scale = 64 / 256
    assert abs(peak[0] - (top + 12) * scale) <= 3 and abs(peak[1] - (left + 12) * scale) <= 3


def test_the_saliency_crop_maximises_the_window_sum() -> None:
    """Brute force over every position of the map brought to the image size, independently of the integral image."""
    image = torch.rand(3, 40, 52, generator=torch.Generator().manual_seed(0))
    box = salient_box(image, 16)
    full = F.interpolate(torch.from_numpy(saliency(image))[None, None], size=(40, 52), mode="bilinear",
                         align_corners=False)[0, 0].numpy()
    sums = np.array([[full[t:t + 16, l:l + 16].sum() for l in range(52 - 15)] for t in range(40 - 15)])
    assert sums[box.top, box.left] == pytest.approx(sums.max(), rel=1e-12)


def _grads(model: torch.nn.Module, stage: SliqueStage) -> dict[str, bool]:
    """Which parts got a non-zero gradient from one step's loss."""
    examples = [Example(torch.rand(3, 80, 96, generator=torch.Generator().manual_seed(i)), str(i),
                        texts=(f"a photo of thing {i}.", f"level {i} noise")) for i in range(3)]
    batch = stage.collate([stage.sample(e, torch.Generator().manual_seed(7)) for e in examples])
    loss = stage.loss(model, model, batch, None)
    loss.backward()
    parts = {"trunk": model.image.trunk, "text_projection": model.image.text_projection,
             "image_head": model.image.image_head, "text": model.text}
    return {name: part is not None and all(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
            for name, part in parts.items()}


@pytest.mark.parametrize(("objective", "trained"), [
    ("joint", {"trunk", "text_projection", "image_head", "text"}),
    ("image-image", {"trunk", "image_head"}),
    ("image-text", {"trunk", "text_projection", "text"})])
def test_each_objective_trains_its_parts_only(objective: str, trained: set[str]) -> None:
    stage = SliqueStage(**TINY, objective=objective)
    torch.manual_seed(0)
    model = stage.build_model()
    grads = _grads(model, stage)
    assert {name for name, has in grads.items() if has} == trained
    if objective == "image-image":  # no text tower and no image-text projection at all
        assert model.text is None and model.image.text_projection is None and stage.text_kinds() == ()
    if objective == "image-text":
        assert model.image.image_head is None


def test_the_joint_loss_weighs_the_two_branches_with_alpha() -> None:
    stage = SliqueStage(**TINY, alpha=0.7)
    torch.manual_seed(0)
    model = stage.build_model().eval()  # eval: BatchNorm as fixed maps, so the passes below agree
    examples = [Example(torch.rand(3, 80, 96, generator=torch.Generator().manual_seed(i)), str(i),
                        texts=(f"text {i}", "shared")) for i in range(3)]
    batch = stage.collate([stage.sample(e, torch.Generator().manual_seed(i)) for i, e in enumerate(examples)])
    with torch.no_grad():
        joint = float(stage.loss(model, model, batch, None))
        first = model.image.for_images(batch["pairs"][:, 0]).double()
        second = model.image.for_images(batch["pairs"][:, 1]).double()
        image = model.image.for_texts(batch["salient"]).double()
        text = F.normalize(model.text(batch["tokens"]), dim=1).double()
    ii = _hand_info_nce(first.numpy(), second.numpy(), 0.1)
    it = _hand_info_nce(image.numpy(), text.numpy(), 0.1, batch["own_text"].numpy())
    assert joint == pytest.approx(0.3 * it + 0.7 * ii, rel=1e-5)


def test_own_texts_of_other_images_are_not_negatives() -> None:
    stage = SliqueStage(**TINY, objective="image-text")
    examples = [Example(torch.rand(3, 64, 64), "a", texts=("cat",)),
                Example(torch.rand(3, 64, 64), "b", texts=("cat", "dog")),
                Example(torch.rand(3, 64, 64), "c", texts=("dog",))]
    batch = stage.collate([stage.sample(e, torch.Generator().manual_seed(0)) for e in examples])
    drawn = [stage.sample(e, torch.Generator().manual_seed(0)).text for e in examples]
    expected = torch.tensor([[d in e.texts for d in drawn] for e in examples])
    assert torch.equal(batch["own_text"], expected) and batch["own_text"].diagonal().all()


def test_text_kinds_follow_the_flags_and_the_objective() -> None:
    assert SliqueStage().text_kinds() == ("content", "distortion", "appearance")
    assert SliqueStage(content_texts=False).text_kinds() == ("distortion", "appearance")
    assert SliqueStage(distortion_texts=False).text_kinds() == ("content", "appearance")
    assert SliqueStage(appearance_texts=False).text_kinds() == ("content", "distortion")
    assert SliqueStage(objective="image-image").text_kinds() == ()
    with pytest.raises(ValueError, match="every kind of text is switched off"):
        SliqueStage(content_texts=False, distortion_texts=False, appearance_texts=False).check()
    SliqueStage(content_texts=False, distortion_texts=False, appearance_texts=False, objective="image-image").check()


@pytest.mark.parametrize("bad", [{"objective": "both"}, {"alpha": 1.5}, {"temperature": 0.0}, {"text_heads": 3},
                                 {"ola_min": 0.4}, {"backbone": "resnet-9000"}, {"init_weights": "/absent.pth"}])
def test_settings_that_cannot_work_are_refused(bad: dict) -> None:
    with pytest.raises(Exception, match="slique|backbone"):
        SliqueStage(**{**TINY, **bad}).check()


def test_images_without_texts_are_refused_before_training() -> None:
    from iqa_store.train.data import TrainingData

    class Data:  # what prepare reads of a TrainingData
        ids, texts = ("a", "b"), (("cat",), ())
    with pytest.raises(ValueError, match="1 of 2 images have no texts"):
        SliqueStage(**TINY).prepare(Data())
    with pytest.raises(ValueError, match="carries no texts"):
        SliqueStage(**TINY).prepare(TrainingData("x", (), (), ""))
    SliqueStage(**TINY, objective="image-image").prepare(TrainingData("x", (), (), ""))


# --- the networks --------------------------------------------------------------------------------

def test_the_default_text_tower_is_clips_and_the_tokenizer_clips_bpe() -> None:
    with torch.device("meta"):
        tower = build_text_tower()
    assert sum(p.numel() for p in tower.parameters()) == 63_428_096  # CLIP's text transformer (SLIQUE.md)
    assert len(tower.state_dict()) == 149 and tower.pool_type == "argmax"
    from open_clip import get_tokenizer
    texts = ["A photo of a cat.", "some blurring", "Very LOW brightness"]
    assert torch.equal(tokenize(texts), get_tokenizer("RN50")(texts))  # CLIP's BPE and layout (SOT, ..., EOT)
    assert tokenize(["x"])[0, 0] == 49406 and tokenize(["x"])[0, 2] == 49407


def test_a_narrow_trunk_keeps_torchvision_keys_and_width_64_is_torchvision() -> None:
    torch.manual_seed(0)
    narrow = build_trunk("resnet50", 16)
    reference = ResNet(torchvision_bottleneck(), [3, 4, 6, 3], width_per_group=64)
    assert set(narrow.state_dict()) == set(reference.state_dict()) - {"fc.weight", "fc.bias"}
    assert narrow(torch.rand(2, 3, 64, 64)).shape == (2, trunk_dim("resnet50", 16)) == (2, 512)
    assert narrow.layer4[0].conv3.out_channels == 512 and narrow.conv1.out_channels == 16
    torch.manual_seed(3)
    ours = build_trunk("resnet-tiny", 64)
    torch.manual_seed(3)
    theirs = ResNet(BasicBlock, [1, 1, 1, 1])
    theirs.fc = torch.nn.Identity()
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()))


def torchvision_bottleneck() -> type:
    from torchvision.models.resnet import Bottleneck
    return Bottleneck


# --- the released checkpoint layout ----------------------------------------------------------------

def released_layout(network: ResNet, seed: int = 0) -> dict[str, torch.Tensor]:
    """The key layout of SLIQUE.tar (CON_model): visual.* (the whole ResNet, fc included), the same
    tensors as CONTRIQUE's Sequential under model.encoder.<i>.*, the projector, the CLIP text parts."""
    generator = torch.Generator().manual_seed(seed)
    state = {f"visual.{k}": v for k, v in network.state_dict().items()}
    sequential = torch.nn.Sequential(*list(network.children())[:-2])
    state.update({f"model.encoder.{k}": v for k, v in sequential.state_dict().items()})
    state.update({"model.projector.0.weight": torch.randn(8, 512, generator=generator),
                  "image_projection": torch.randn(512, 8, generator=generator),
                  "text_projection": torch.randn(8, 8, generator=generator), "logit_scale": torch.tensor(2.659),
                  "token_embedding.weight": torch.randn(16, 8, generator=generator),
                  "projector1.1.weight": torch.randn(4, 4, generator=generator)})
    return state


def tiny_network(seed: int) -> ResNet:
    """resnet-tiny at torchvision's width with random BatchNorm statistics (a buffer not loaded shows)."""
    torch.manual_seed(seed)
    network = ResNet(BasicBlock, [1, 1, 1, 1])
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
    return network.eval()


def reference_features(network: ResNet, paths: list[Path]) -> np.ndarray:
    """demo_feat.py without its random flips: ToTensor, PIL half scale, pooled layer4, L2 per scale."""
    trunk = torch.nn.Sequential(*list(network.children())[:-2]).eval()
    rows = []
    with torch.no_grad():
        for path in paths:
            image = Image.open(path).convert("RGB")
            half = image.resize((image.size[0] // 2, image.size[1] // 2))
            pooled = [F.normalize(trunk(transforms.ToTensor()(x)[None]).mean(dim=(2, 3)), dim=1) for x in (image, half)]
            rows.append(torch.cat(pooled, dim=1)[0].numpy())
    return np.stack(rows)


def test_the_released_layout_maps_onto_torchvision_keys() -> None:
    network = tiny_network(1)
    state = released_layout(network)
    mapped = trunk_state(state)
    expected = {k: v for k, v in network.state_dict().items() if not k.startswith("fc.")}
    assert mapped.keys() == expected.keys() and all(torch.equal(mapped[k], expected[k]) for k in expected)
    only_visual = {k: v for k, v in state.items() if not k.startswith("model.")}
    assert trunk_state(only_visual).keys() == expected.keys()


def test_the_extractor_reads_the_released_checkpoint_deterministically(tmp_path: Path) -> None:
    from iqa_store.extractors.testing import write_photos
    network = tiny_network(2)
    path = tmp_path / "SLIQUE.tar"
    torch.save(released_layout(network), path)
    paths = write_photos(tmp_path / "images", 3, (72, 56))
    extractor = create_extractor("slique", weights=str(path), backbone="resnet-tiny")
    extractor.prepare(RunOptions())
    values = extractor.compute(extractor.collate([extractor.load_item(p) for p in paths]))
    np.testing.assert_allclose(values, reference_features(network, paths), rtol=1e-4, atol=1e-5)
    assert values.shape == (3, 1024) and extractor.dim == 1024
    np.testing.assert_allclose(np.linalg.norm(values[:, :512], axis=1), 1.0, rtol=1e-5)
    again = extractor.compute(extractor.collate([extractor.load_item(p) for p in paths]))
    assert np.array_equal(values, again)  # no random flips: bit-identical


def test_a_checkpoint_of_another_network_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "SLIQUE.tar"
    torch.save(released_layout(tiny_network(0)), path)
    extractor = create_extractor("slique", weights=str(path))  # the default: ResNet-50
    with pytest.raises(ExtractorError, match="does not fit this trunk.*missing keys"):
        extractor.prepare(RunOptions())
