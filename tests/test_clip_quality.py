"""iqa_store.nets.clip_quality against independent computations and the official file layouts.

The model is a real open_clip CLIP with a tiny ModifiedResNet (conftest ``TinyRN-test``), every
weight and BatchNorm statistic drawn at random (open_clip zero-initialises each block's last BN
scale, which would make the residual branches vanish and the test weaker).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from conftest import TINY_CLIP_RN_ARCH
from iqa_store.nets.clip_quality import (PROMPTS_KEY, CheckpointError, PromptPair, encode_prompts, load_clip_state,
                                         pair_probabilities, pooled_image_features, prompt_pairs, prompt_sets,
                                         read_clip_state, write_qualiclip_state)

LAYOUTS = ("openai", "open_clip", "open_clip-training", "qualiclip", "qualiclip-visual")


def tiny_rn_clip(configs: Path, seed: int = 0) -> Any:
    """The tiny CLIP ResNet model (QuickGELU text tower), every tensor random."""
    import open_clip
    open_clip.add_model_config(str(configs))
    model = open_clip.create_model(TINY_CLIP_RN_ARCH, pretrained=None, force_quick_gelu=True)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            values = torch.randn(tensor.shape, generator=generator)
            if name.endswith("running_var"):
                values = 0.5 + values.abs()
            elif name == "logit_scale":
                values = torch.full_like(tensor, np.log(100.0))
            elif tensor.dim() == 1 and name.endswith("weight"):  # norm scales near 1: the image's signal survives
                values = 1.0 + 0.2 * values
            elif name == "token_embedding.weight":  # prompts close to each other: scores not saturated at 100 x cos
                values = 0.01 * values
            else:
                values = values * (0.1 if tensor.dim() < 2 else tensor[0].numel() ** -0.5)
            tensor.copy_(values)
    return model.eval()


def random_prompt_features(pairs: int, dim: int, seed: int = 1) -> torch.Tensor:
    """[2P, D] normalised features, each pair's two close (as real antonym prompts are: 100 x cos not saturated)."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(pairs, 1, dim, generator=generator)
    features = centres + 0.05 * torch.randn(pairs, 2, dim, generator=generator)
    return torch.nn.functional.normalize(features.reshape(2 * pairs, dim), dim=-1)


def write_layout(model: Any, layout: str, path: Path, prompts_features: torch.Tensor | None = None) -> Path:
    """``model`` saved as the named official layout: OpenAI (``torch.save`` of the state dict with
    its three integer entries), open_clip (safetensors of ``state_dict()``, as its hub files),
    an open_clip training checkpoint ({'epoch', 'state_dict' with 'module.' prefixes}), the
    published ``qualiclip.pth`` (flat ``clip_model.*`` + ``prompts_features``) and our export."""
    from safetensors.torch import save_file
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if layout == "openai":
        state.update(input_resolution=torch.tensor(64), context_length=torch.tensor(77), vocab_size=torch.tensor(49408))
        torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, path)
    elif layout == "open_clip":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif layout == "open_clip-training":
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    elif layout == "qualiclip":
        assert prompts_features is not None
        torch.save({**{f"clip_model.{k}": v for k, v in state.items()}, PROMPTS_KEY: prompts_features}, path)
    elif layout == "qualiclip-visual":
        assert prompts_features is not None
        write_qualiclip_state(path, model.visual.state_dict(), prompts_features)
    else:
        raise ValueError(layout)
    return path


def manual_pool_without_positions(pool: Any, feature_map: torch.Tensor) -> torch.Tensor:
    """Multi-head attention written out in float64 over all HW + 1 tokens (no positional term),
    the output of token 0: an independent computation of the pool."""
    weights = {name: getattr(pool, name) for name in ("q_proj", "k_proj", "v_proj", "c_proj")}
    x = feature_map.double().flatten(2).transpose(1, 2)  # [B, HW, C]
    x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)  # [B, HW + 1, C]

    def project(name: str, values: torch.Tensor) -> torch.Tensor:
        return values @ weights[name].weight.double().T + weights[name].bias.double()

    batch, tokens, width = x.shape
    heads = pool.num_heads
    q, k, v = (project(n, x).view(batch, tokens, heads, width // heads) for n in ("q_proj", "k_proj", "v_proj"))
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(width // heads)
    attended = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(dim=-1), v).reshape(batch, tokens, width)
    return project("c_proj", attended)[:, 0]


@pytest.fixture(scope="module")
def model(tiny_clip_configs: Path) -> Any:
    return tiny_rn_clip(tiny_clip_configs)


def test_pool_matches_a_written_out_attention_at_other_sizes(model: Any) -> None:
    visual = model.visual
    pixels = torch.randn(2, 3, 96, 160, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = pooled_image_features(visual, pixels)
        feature_map = visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(pixels)))))
        reference = manual_pool_without_positions(visual.attnpool, feature_map)
    assert ours.shape == (2, visual.output_dim)
    np.testing.assert_allclose(ours.numpy(), reference.numpy(), rtol=1e-4, atol=1e-5)


def test_pool_equals_open_clips_forward_with_a_zero_positional_embedding(model: Any) -> None:
    """At the pool's own size (64 px for the tiny tower, 224 for RN50) open_clip's forward runs;
    with its table zeroed it must give our output, and with the table it must not."""
    visual = model.visual
    pixels = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        with_positions = visual(pixels)
        saved = visual.attnpool.positional_embedding.data.clone()
        visual.attnpool.positional_embedding.data.zero_()
        try:
            zero_positions = visual(pixels)
        finally:
            visual.attnpool.positional_embedding.data = saved
        ours = pooled_image_features(visual, pixels)
    np.testing.assert_allclose(ours.numpy(), zero_positions.numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(ours.numpy(), with_positions.numpy(), atol=1e-3)


def test_pair_probabilities_equal_a_numpy_softmax() -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(4, 16))
    prompts = rng.normal(size=(6, 16))
    prompts /= np.linalg.norm(prompts, axis=1, keepdims=True)
    for scale in (100.0, 50.0):
        cosine = (image / np.linalg.norm(image, axis=1, keepdims=True)) @ prompts.T
        logits = scale * cosine.reshape(4, 3, 2)
        expected = np.exp(logits[..., 0]) / np.exp(logits).sum(axis=-1)
        ours = pair_probabilities(torch.tensor(image), torch.tensor(prompts), scale=scale)
        np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_prompt_features_come_from_the_text_tower_in_pair_order(model: Any) -> None:
    import open_clip
    tokenizer = open_clip.get_tokenizer(TINY_CLIP_RN_ARCH)
    pairs = [pair.texts for pair in prompt_pairs("qualiclip")[:2]]
    ours = encode_prompts(model, tokenizer, pairs)
    with torch.no_grad():
        one_by_one = [model.encode_text(tokenizer([text])) for pair in pairs for text in pair]
    reference = torch.nn.functional.normalize(torch.cat(one_by_one), dim=-1)
    assert ours.shape == (4, model.text_projection.shape[1])
    np.testing.assert_allclose(ours.numpy(), reference.numpy(), rtol=1e-5, atol=1e-6)


def test_the_official_prompt_sets() -> None:
    assert {"clipiqa", "clipiqa-attributes", "clipiqa-ava", "qualiclip"} <= set(prompt_sets())
    assert prompt_pairs("clipiqa") == (PromptPair("quality", "Good photo.", "Bad photo.", True),)
    qualiclip = prompt_pairs("qualiclip")
    assert len(qualiclip) == 7 and qualiclip[3].texts == ("High-resolution image.", "Low-resolution image.")
    assert all(pair.higher_is_better for pair in qualiclip)
    noisy = [pair for pair in prompt_pairs("clipiqa-attributes") if pair.name == "noisiness"]
    assert noisy[0].texts == ("Noisy photo.", "Clean photo.") and noisy[0].higher_is_better is False
    with pytest.raises(KeyError, match="unknown prompt set 'nope'"):
        prompt_pairs("nope")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_round_trips(model: Any, tiny_clip_configs: Path, tmp_path: Path, layout: str) -> None:
    prompts = random_prompt_features(7, model.visual.output_dim)
    suffix = ".safetensors" if layout in ("open_clip", "qualiclip-visual") else ".pth"
    path = write_layout(model, layout, tmp_path / f"weights{suffix}", prompts)
    state = read_clip_state(path)
    assert state.layout == {"open_clip-training": "open_clip"}.get(layout, layout)
    assert (state.prompts_features is not None) == layout.startswith("qualiclip")
    if state.prompts_features is not None:
        assert torch.equal(state.prompts_features, prompts)
    fresh = tiny_rn_clip(tiny_clip_configs, seed=9)
    load_clip_state(fresh, state, str(path))
    pixels = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(5))
    tolerance = 2e-2 if layout == "openai" else 0.0  # OpenAI's files hold fp16 weights
    with torch.no_grad():
        expected, got = pooled_image_features(model.visual, pixels), pooled_image_features(fresh.visual, pixels)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=tolerance, atol=tolerance)
    text_loaded = not layout == "qualiclip-visual"
    assert torch.equal(fresh.text_projection, model.text_projection.half().float() if layout == "openai"
                       else model.text_projection) == text_loaded


def test_files_of_neither_layout_are_one_clear_error(tmp_path: Path) -> None:
    other = tmp_path / "other.pth"
    torch.save({"encoder.conv1.weight": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="neither a CLIP state dict .* nor a QualiCLIP checkpoint"):
        read_clip_state(other)
    no_prompts = tmp_path / "half.pth"
    torch.save({"clip_model.visual.conv1.weight": torch.zeros(2), "extra": torch.zeros(1)}, no_prompts)
    with pytest.raises(CheckpointError, match="not a QualiCLIP checkpoint.*prompts_features None"):
        read_clip_state(no_prompts)


def test_a_pickled_payload_is_refused_unrun(tmp_path: Path) -> None:
    from conftest import PicklePayload
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    torch.save({"visual.x": PicklePayload(marker)}, path)
    with pytest.raises(CheckpointError, match="refusing to load .*weights_only=True"):
        read_clip_state(path)
    assert not marker.exists()


def test_a_mismatched_model_is_named(model: Any, tiny_clip_configs: Path, tmp_path: Path) -> None:
    path = write_layout(model, "open_clip", tmp_path / "w.safetensors")
    state = read_clip_state(path)
    state.state_dict.pop("visual.conv1.weight")
    with pytest.raises(CheckpointError, match=r"w.safetensors does not fit the model: missing keys \['visual.conv1"):
        load_clip_state(tiny_rn_clip(tiny_clip_configs), state, str(path))
