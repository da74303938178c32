"""MP-IQE (Pan et al. 2024): multi-modal prompts on a frozen CLIP ViT, shared by its stage and extractor.

What is trained (everything of CLIP stays frozen, in eval mode):

* deep visual prompts (section "Deep Visual Prompting", Eq. 7): ``visual_prompts`` learnable
  tokens placed between the class token and the patch tokens. ``deep``: every layer's input
  gets its own fresh tokens, replacing what the previous layer made of the prompt positions
  (VPT-deep); ``shallow``: tokens only at the first layer, carried through; ``none``: no visual
  prompt (Table 4's "w/o deep visual prompts"). The first layer's prompts are placed after
  CLIP's ``ln_pre``, like every later layer's (each enters the residual stream the same way);
* text prompts (Eq. 6, CoOp): ``[SOS] [V]1 .. [V]M class. [EOS]`` for the 9 scene and the 11
  distortion classes, one context of ``text_context`` vectors per family shared by its classes
  (the paper does not say whether contexts are shared; CoOp's default "unified" context);
  features = CLIP's text tower pooled at EOS, projected (Eq. 2);
* the multimodal encoder (Eq. 12-14): queries Q = [V^s; V^d] (20 x 512), ``decoder_layers``
  pre-norm blocks of self-attention over the queries, cross-attention to the image tokens
  I' = [CLS, E] (prompt positions excluded) and an MLP, each with its residual; the query
  outputs are pooled (``pooling``: their mean by default) into the image's feature, and an MLP
  head (LayerNorm, Linear d->d, GELU, Linear d->1) gives the score.

Alignment (Eq. 8-11): image tokens after CLIP's ``ln_post`` and visual projection (768 -> 512,
CLIP's own frozen projection: the paper's "linear layer"); scene logits = cos(CLS, V^s_c) / T;
distortion: the patch tokens as a square grid, adaptive max pooling to ``window`` x ``window``
windows, s_ic = cos(P_i, V^d_c), aggregated per class as sum_i softmax_i(s_ic / T_window) s_ic
(Eq. 10, read with V^d: the printed V^s is a typo), logits = that / T.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from iqa_store.nets.mpiqe_labels import class_lists
from iqa_store.nets.resize import upscaled_to

__all__ = ["MpiqeConfig", "MpiqeModel", "MpiqeOutput", "class_prompt_tokens", "random_crops"]

VisualDepth = Literal["deep", "shallow", "none"]
Pooling = Literal["mean", "max"]
PLACEHOLDER = "X"
FAMILIES = ("scene", "distortion")


@dataclass(frozen=True)
class MpiqeConfig:
    """The architecture; every value the paper leaves open is here with our default."""

    text_context: int = 8  # Table 6: 8
    visual_prompts: int = 4  # Table 6: 4
    visual_depth: VisualDepth = "deep"
    scene_prompts: bool = True  # Table 4: "w/o scene prompts" = False
    distortion_prompts: bool = True  # Table 4: "w/o distortion prompts" = False
    window: int = 7  # w: distortion windows per side (2 x 2 patches of ViT-B/16's 14 x 14 grid)
    temperature: float = 0.01  # T of Eq. 8 (CLIP's logit scale 100), also the distortion logits'
    window_temperature: float = 0.1  # T-bar of Eq. 10
    heads: int = 8
    decoder_layers: int = 3  # "a three-layer transformer decoder"
    mlp_ratio: float = 4.0
    pooling: Pooling = "mean"
    prompt_std: float = 0.02  # N(0, std) initialisation of every learned prompt vector

    def check(self) -> None:
        if not (self.scene_prompts or self.distortion_prompts):
            raise ValueError("mpiqe: the multimodal encoder's queries are the scene and distortion prompts; "
                             "keep at least one of them")
        if self.text_context < 1 or self.visual_prompts < 0 or self.window < 1 or self.decoder_layers < 1:
            raise ValueError("mpiqe: text_context, window and decoder_layers must be positive, visual_prompts >= 0")
        if self.visual_depth not in ("deep", "shallow", "none"):
            raise ValueError(f"mpiqe: visual_depth must be deep, shallow or none, not {self.visual_depth!r}")
        if self.pooling not in ("mean", "max"):
            raise ValueError(f"mpiqe: pooling must be mean or max, not {self.pooling!r}")
        if min(self.temperature, self.window_temperature, self.prompt_std, self.mlp_ratio) <= 0 or self.heads < 1:
            raise ValueError("mpiqe: temperatures, prompt_std and mlp_ratio must be positive, heads at least 1")

    @property
    def families(self) -> tuple[str, ...]:
        return tuple(f for f, on in zip(FAMILIES, (self.scene_prompts, self.distortion_prompts)) if on)

    @property
    def prompt_tokens(self) -> int:
        """Visual prompt positions in the token sequence."""
        return 0 if self.visual_depth == "none" else self.visual_prompts

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class MpiqeOutput:
    """Per input crop: class logits (None for a family switched off), the pooled feature, the score."""

    scene_logits: torch.Tensor | None
    distortion_logits: torch.Tensor | None
    features: torch.Tensor  # [N, embed_dim]: the multimodal encoder's pooled output
    score: torch.Tensor  # [N]


def class_prompt_tokens(tokenizer: Any, names: Sequence[str], n_context: int) -> torch.Tensor:
    """Token ids of ``"X X .. X {name}."`` (``n_context`` placeholders right after SOS)."""
    prefix = " ".join([PLACEHOLDER] * n_context)
    return tokenizer([f"{prefix} {name}." for name in names])


class DecoderLayer(nn.Module):
    """Eq. 13-14 as a pre-norm block: Q += MHSA(LN Q); Q += MHCA(LN Q, LN I', LN I'); Q += MLP(LN Q)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm_query, self.norm_cross, self.norm_memory, self.norm_mlp = (nn.LayerNorm(width) for _ in range(4))
        self.self_attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.cross_attention = nn.MultiheadAttention(width, heads, batch_first=True)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, queries: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        normed = self.norm_query(queries)
        queries = queries + self.self_attention(normed, normed, normed, need_weights=False)[0]
        memory = self.norm_memory(memory)
        queries = queries + self.cross_attention(self.norm_cross(queries), memory, memory, need_weights=False)[0]
        return queries + self.mlp(self.norm_mlp(queries))


class MpiqeModel(nn.Module):
    """A frozen open_clip CLIP ViT with MP-IQE's learned prompts, multimodal encoder and score head."""

    def __init__(self, clip: nn.Module, tokenizer: Any, config: MpiqeConfig) -> None:
        super().__init__()
        config.check()
        visual = clip.visual
        if not hasattr(visual, "class_embedding"):
            raise ValueError(f"mpiqe needs a CLIP ViT image tower, not {type(visual).__name__}")
        self.config = config
        self.clip = clip.requires_grad_(False)
        width, text_width = visual.class_embedding.shape[0], clip.token_embedding.weight.shape[1]
        embed = visual.proj.shape[1]
        layers = len(visual.transformer.resblocks)
        prompted_layers = {"deep": layers, "shallow": 1, "none": 0}[config.visual_depth]
        if prompted_layers and config.visual_prompts:
            self.visual_prompts = nn.Parameter(torch.empty(prompted_layers, config.visual_prompts, width)
                                               .normal_(std=config.prompt_std))
        else:
            self.visual_prompts = None
        classes = class_lists()
        for family in config.families:
            names = getattr(classes, family)
            self.register_buffer(f"{family}_tokens", class_prompt_tokens(tokenizer, names, config.text_context))
            setattr(self, f"{family}_context",
                    nn.Parameter(torch.empty(config.text_context, text_width).normal_(std=config.prompt_std)))
        self.decoder = nn.ModuleList(DecoderLayer(embed, config.heads, config.mlp_ratio)
                                     for _ in range(config.decoder_layers))
        self.head = nn.Sequential(nn.LayerNorm(embed), nn.Linear(embed, embed), nn.GELU(), nn.Linear(embed, 1))

    @property
    def embed_dim(self) -> int:
        return int(self.clip.visual.proj.shape[1])

    def train(self, mode: bool = True) -> "MpiqeModel":
        super().train(mode)
        self.clip.eval()  # frozen: CLIP runs as at inference
        return self

    def learned_state(self) -> dict[str, torch.Tensor]:
        """What training changes (the export): every tensor outside the frozen CLIP, buffers included."""
        return {k: v.detach().float().clone() for k, v in self.state_dict().items() if not k.startswith("clip.")}

    def load_learned_state(self, state: dict[str, torch.Tensor], source: str) -> None:
        expected = self.learned_state()
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != tuple(expected[k].shape))
        if missing or unexpected or wrong:
            raise ValueError(f"{source} does not fit this MP-IQE configuration: missing {missing[:4]}, unexpected "
                             f"{unexpected[:4]}, other shapes {wrong[:4]}")
        self.load_state_dict({**{f"clip.{k}": v for k, v in self.clip.state_dict().items()}, **state})

    # --- text -------------------------------------------------------------------------------------
    def text_features(self, family: str) -> torch.Tensor:
        """[C, embed] projected EOS features of the family's prompts with the learned context after SOS."""
        clip = self.clip
        tokens: torch.Tensor = getattr(self, f"{family}_tokens")
        context: torch.Tensor = getattr(self, f"{family}_context")
        cast = clip.transformer.get_cast_dtype()
        embedded = clip.token_embedding(tokens).to(cast)
        n = context.shape[0]
        x = torch.cat([embedded[:, :1], context.to(cast).expand(len(tokens), -1, -1), embedded[:, 1 + n:]], dim=1)
        x = clip.ln_final(clip.transformer(x + clip.positional_embedding.to(cast), attn_mask=clip.attn_mask))
        x = x[torch.arange(len(tokens), device=x.device), tokens.argmax(dim=-1)]  # EOS: the largest id
        projection = clip.text_projection
        return projection(x) if isinstance(projection, nn.Linear) else x @ projection

    # --- image ------------------------------------------------------------------------------------
    def image_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """[N, 1 + prompts + patches, embed]: every token after ``ln_post`` and the visual projection."""
        visual = self.clip.visual
        x = visual.conv1(pixels.to(visual.conv1.weight.dtype))
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
        x = visual.ln_pre(torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype))
        n = self.config.prompt_tokens
        for index, block in enumerate(visual.transformer.resblocks):
            x = self._with_prompts(x, index, n)
            x = block(x) if visual.transformer.batch_first else block(x.transpose(0, 1)).transpose(0, 1)
        return visual.ln_post(x) @ visual.proj

    def _with_prompts(self, x: torch.Tensor, layer: int, n: int) -> torch.Tensor:
        """Layer ``layer``'s input: [CLS, P, E] with fresh prompts where this layer gets them."""
        if self.visual_prompts is None:
            return x
        if layer < len(self.visual_prompts):
            prompts = self.visual_prompts[layer].to(x.dtype).expand(x.shape[0], -1, -1)
            rest = x[:, 1 + n:] if layer else x[:, 1:]  # the first layer has no prompt positions yet
            return torch.cat([x[:, :1], prompts, rest], dim=1)
        return x

    # --- the whole model --------------------------------------------------------------------------
    def forward(self, pixels: torch.Tensor) -> MpiqeOutput:
        config = self.config
        tokens = self.image_tokens(pixels)
        cls, patches = tokens[:, 0], tokens[:, 1 + config.prompt_tokens:]
        texts = {family: self.text_features(family) for family in config.families}
        scene = distortion = None
        if "scene" in texts:
            scene = F.normalize(cls, dim=-1) @ F.normalize(texts["scene"], dim=-1).T / config.temperature
        if "distortion" in texts:
            distortion = window_similarity(patches, texts["distortion"], config.window,
                                           config.window_temperature) / config.temperature
        queries = torch.cat([texts[f] for f in config.families]).to(tokens.dtype)
        queries = queries.expand(tokens.shape[0], -1, -1)
        memory = torch.cat([tokens[:, :1], patches], dim=1)
        for layer in self.decoder:
            queries = layer(queries, memory)
        features = queries.mean(dim=1) if config.pooling == "mean" else queries.amax(dim=1)
        return MpiqeOutput(scene, distortion, features, self.head(features)[:, 0])


def window_similarity(patches: torch.Tensor, texts: torch.Tensor, window: int, temperature: float) -> torch.Tensor:
    """Eq. 10: [N, b, D] patch tokens, [C, D] texts -> [N, C] spatially weighted window cosines."""
    count, positions, width = patches.shape
    side = math.isqrt(positions)
    if side * side != positions:
        raise ValueError(f"mpiqe: {positions} patch tokens do not form a square grid (crops must be square)")
    grid = patches.transpose(1, 2).reshape(count, width, side, side)
    windows = F.adaptive_max_pool2d(grid, window).flatten(2).transpose(1, 2)  # [N, w*w, D]
    cosines = F.normalize(windows, dim=-1) @ F.normalize(texts, dim=-1).T  # [N, w*w, C]
    weights = torch.softmax(cosines / temperature, dim=1)
    return (weights * cosines).sum(dim=1)


# --- crops, shared by training and extraction -------------------------------------------------------



def random_crops(image: torch.Tensor, count: int, side: int, generator: torch.Generator) -> torch.Tensor:
    """[count, 3, side, side] crops at uniform random positions (the image upscaled first if smaller)."""
    image = upscaled_to(image, side)
    height, width = image.shape[-2:]
    tops = torch.randint(0, height - side + 1, (count,), generator=generator).tolist()
    lefts = torch.randint(0, width - side + 1, (count,), generator=generator).tolist()
    return torch.stack([image[:, t:t + side, l:l + side] for t, l in zip(tops, lefts)])
