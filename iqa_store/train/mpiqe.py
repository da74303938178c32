"""MP-IQE (Pan et al. 2024) as a supervised stage: multi-modal prompts on a frozen CLIP ViT, per split.

The model is ``iqa_store.nets.mpiqe`` (deep visual prompts, scene and distortion text prompts,
the multimodal encoder and its score head). Per training image (``sample``): ``crops`` random
crops of the ViT's input size (224 for ViT-B/16; "we randomly crop 8 sub-images of 224x224"),
CLIP-normalised, each crop a sample labelled with its image's MOS, scenes and distortion (the
paper does not say whether a batch counts images or crops: ``--batch-size`` counts images, as
everywhere in this trainer, each bringing its crops).

Loss (Eq. 15): lambda_scene L_scene + lambda_distortion L_dist + lambda_score L_score with
lambda_scene = 1 (Eq. 15 has no weight on it), lambda_distortion (lambda_1) = 1.0 and
lambda_score (lambda_2) 0.1 for LIVE and CSIQ, 0.5 otherwise ("auto"). L_scene, L_dist: cross-entropy
with the image's classes as target (LIQE's up to three scenes share the target mass equally),
averaged over the crops that have labels; Eq. 9 and 11 print a further 1/M (1/N), a constant
we leave out (it would only rescale lambda_1 and the scene term). L_score: smooth-L1 (the text;
``--score-loss l1`` for Eq. 16's L1) between the score and the MOS mapped to [0, 1] by the
dataset's declared range; the smooth-L1 ``beta`` is 0.05 of that range, so the loss is L1 beyond
5 % errors. The extractor's score is mapped back to the MOS scale.

Labels (``iqa_store.nets.mpiqe_labels``), read for the training rows' images only: LIQE's label
files in ``--labels DIR``, else the dataset's own distortion type (LIVE, CSIQ, KADID-10k, TID2013
layouts), else CLIP zero-shot pseudo-labels: the frozen base CLIP's argmax over "a photo of a
{scene}." / "a photo with {distortion} distortion." on the image resized (short side) and centre
cropped to the input size. Where each family's labels came from, counted, is in the encoder's
config (``labels``). ``--label-source none`` trains on the score alone (the alignment terms off);
``zero-shot`` ignores the other sources.

Schedule (Training Details): Adam, lr 3e-5, cosine decay, 30 epochs, batch 32 (the paper: 32 for
LIVE, CSIQ, BID; 64 for the others, ``--batch-size 64``), 5 linear warm-up epochs (the
trainer turns them into steps; ``--warmup-steps`` overrides). No model selection: the fixed schedule runs to its end, so no validation or test row is read.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from iqa_store.nets.clip_quality import CLIP_MEAN, CLIP_STD
from iqa_store.nets.mpiqe import MpiqeConfig, MpiqeModel, MpiqeOutput, random_crops
from iqa_store.nets.mpiqe_labels import (ImageLabels, class_lists, dataset_distortion_source, dataset_distortions,
                                         read_liqe_labels, zero_shot_prompts)
from iqa_store.nets.openclip import open_clip_module
from iqa_store.train import data as training_data
from iqa_store.train.data import TrainingData
from iqa_store.train.qualiclip import ClipStage, clip_normalise
from iqa_store.train.stage import Data, Example, Export, StepContext, TrainingDefaults, option

LOW_LAMBDA_DATASETS = ("live", "csiq")  # lambda_2 = 0.1 there, 0.5 elsewhere (Training Details)
ZERO_SHOT_BATCH = 32


@dataclass(frozen=True)
class LossWeights:
    scene: float
    distortion: float
    score: float


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over rows with a label of -sum_c t_c log softmax(logits)_c, t the row normalised to sum 1;
    0 when no row has a label."""
    mass = target.sum(dim=-1)
    labelled = mass > 0
    if not labelled.any():
        return logits.sum() * 0.0
    target = target[labelled] / mass[labelled, None]
    return -(target * F.log_softmax(logits[labelled].float(), dim=-1)).sum(dim=-1).mean()


def score_loss(prediction: torch.Tensor, target: torch.Tensor, kind: str, beta: float) -> torch.Tensor:
    if kind == "l1":
        return F.l1_loss(prediction.float(), target)
    return F.smooth_l1_loss(prediction.float(), target, beta=beta)


def total_loss(output: MpiqeOutput, targets: dict[str, torch.Tensor], weights: LossWeights, kind: str,
               beta: float) -> torch.Tensor:
    """Eq. 15 on one batch of crops: the terms of the families the model has, plus the score term."""
    loss = weights.score * score_loss(output.score, targets["score"], kind, beta)
    if output.scene_logits is not None and weights.scene:
        loss = loss + weights.scene * soft_cross_entropy(output.scene_logits, targets["scene"])
    if output.distortion_logits is not None and weights.distortion:
        loss = loss + weights.distortion * soft_cross_entropy(output.distortion_logits, targets["distortion"])
    return loss


@dataclass
class MpiqeStage(ClipStage):
    """MP-IQE (Pan et al. 2024): deep visual + scene/distortion text prompts on a frozen CLIP ViT, trained per split."""

    name: ClassVar[str] = "mpiqe"
    data: ClassVar[Data] = Data.IMAGES_MOS
    reader: ClassVar[str] = "mpiqe"
    # Training Details: Adam 3e-5, cosine, 30 epochs, batch 32 (LIVE, CSIQ, BID) or 64 (the others)
    defaults: ClassVar[TrainingDefaults] = TrainingDefaults(epochs=30, batch_size=32, lr=3e-5, optimizer="adam",
                                                            weight_decay=0.0, schedule="cosine", warmup_epochs=5)

    arch: str = option("ViT-B-16", "open_clip architecture of the CLIP ViT (ViT-B/16 in the paper)")
    text_context: int = option(8, "learned context vectors of each text prompt (Table 6: 2, 4, 8, 16)")
    visual_prompts: int = option(4, "learned visual prompt tokens per layer (Table 6: 1, 2, 4, 8)")
    visual_depth: Literal["deep", "shallow", "none"] = option(
        "deep", "visual prompts at every layer (deep), the first only (shallow, Table 4) or none (Table 4: w/o deep)")
    scene_prompts: bool = option(True, "scene prompts and their alignment (Table 4: --no-scene-prompts)")
    distortion_prompts: bool = option(True, "distortion prompts and their alignment (Table 4: --no-distortion-prompts)")
    window: int = option(7, "w: distortion alignment windows per side (adaptive max pooling of the patch grid)")
    temperature: float = option(0.01, "T of Eq. 8, also dividing the distortion similarities of Eq. 10")
    window_temperature: float = option(0.1, "T-bar of Eq. 10 (spatial weighting of the windows)")
    heads: int = option(8, "attention heads of the multimodal encoder")
    decoder_layers: int = option(3, "blocks of the multimodal encoder (self-, cross-attention, MLP)")
    mlp_ratio: float = option(4.0, "hidden width of each block's MLP, in multiples of the width")
    pooling: Literal["mean", "max"] = option("mean", "how the query outputs become the image's feature")
    prompt_std: float = option(0.02, "standard deviation of every prompt vector's random initialisation")
    crops: int = option(8, "random crops of the ViT's input size per image and step")
    labels: str = option("", "folder of LIQE's label files (*_clip.txt, searched recursively)")
    label_source: Literal["auto", "zero-shot", "none"] = option(
        "auto", "auto: LIQE files, else the dataset's distortion types, else zero-shot; zero-shot; none (score only)")
    lambda_scene: float = option(1.0, "weight of L_scene (Eq. 15: 1)")
    lambda_distortion: float = option(1.0, "lambda_1, weight of L_dist")
    lambda_score: str = option("auto", "lambda_2, weight of L_score: auto = 0.1 for LIVE and CSIQ, 0.5 otherwise")
    score_loss: Literal["smooth-l1", "l1"] = option("smooth-l1", "L_score: smooth-l1 (the text) or l1 (Eq. 16)")
    smooth_l1_beta: float = option(0.05, "smooth-L1's beta, on MOS mapped to [0, 1]")

    def __post_init__(self) -> None:
        super().__post_init__()
        self._mos_range: tuple[float, float] | None = None
        self._lambda_score: float | None = None
        self._targets: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._pending: list[tuple[str, Any]] = []  # (image id, path) still needing zero-shot labels
        self._label_counts: dict[str, Counter] = {}

    # --- settings -------------------------------------------------------------------------------
    def model_config(self) -> MpiqeConfig:
        return MpiqeConfig(self.text_context, self.visual_prompts, self.visual_depth, self.scene_prompts,
                           self.distortion_prompts, self.window, self.temperature, self.window_temperature,
                           self.heads, self.decoder_layers, self.mlp_ratio, self.pooling, self.prompt_std)

    def check(self) -> None:
        config = open_clip_module().get_model_config(self.arch)
        if config is None:
            raise ValueError(f"mpiqe: open_clip has no architecture {self.arch!r}")
        if isinstance(config.get("vision_cfg", {}).get("layers"), (list, tuple)):
            raise ValueError(f"mpiqe: {self.arch} is a CLIP ResNet; MP-IQE prompts a CLIP ViT")
        self.model_config().check()
        if self.crops < 1 or self.smooth_l1_beta <= 0 or min(self.lambda_scene, self.lambda_distortion) < 0:
            raise ValueError("mpiqe: crops and smooth_l1_beta must be positive, loss weights not negative")
        if self.lambda_score != "auto":
            try:
                if float(self.lambda_score) < 0:
                    raise ValueError
            except ValueError:
                raise ValueError(f"mpiqe: lambda_score must be 'auto' or a number >= 0, not {self.lambda_score!r}") \
                    from None
        if self.label_source not in ("auto", "zero-shot", "none"):
            raise ValueError(f"mpiqe: label_source must be auto, zero-shot or none, not {self.label_source!r}")
        if self.labels and self.label_source != "auto":
            raise ValueError("mpiqe: --labels are read with --label-source auto")

    def hyperparameters(self) -> dict[str, Any]:
        """The fields, and with ``labels`` the content of its label files: they are training data."""
        fields = super().hyperparameters()
        if self.labels:
            fields["labels_identity"] = read_liqe_labels(self.labels).identity()
        return fields

    def crop_side(self) -> int:
        size = open_clip_module().get_model_config(self.arch)["vision_cfg"].get("image_size", 224)
        return int(size if isinstance(size, int) else size[0])

    def loss_weights(self) -> LossWeights:
        labelled = self.label_source != "none"
        score = self._lambda_score if self._lambda_score is not None else float(self.lambda_score)
        return LossWeights(self.lambda_scene if labelled else 0.0, self.lambda_distortion if labelled else 0.0, score)

    # --- data -----------------------------------------------------------------------------------
    def prepare(self, data: TrainingData) -> None:
        """The MOS scale, lambda_2 for the dataset, and every training image's labels that need no model."""
        if data.mos_range is None or data.scope is None:
            raise ValueError("mpiqe trains on MOS: its data must be a split's training rows")
        low, high = data.mos_range
        if not high > low:
            raise ValueError(f"mpiqe: the dataset's MOS range {data.mos_range} is empty")
        self._mos_range = (low, high)
        dataset = data.scope.dataset
        self._lambda_score = (float(self.lambda_score) if self.lambda_score != "auto"
                              else 0.1 if dataset in LOW_LAMBDA_DATASETS else 0.5)
        self._targets, self._pending = {}, []
        self._label_counts = {"scene": Counter(), "distortion": Counter()}
        if self.label_source == "none":
            return
        known = self._known_labels(dataset, data)
        for image_id, path, labels in zip(data.ids, data.paths, known):
            if self.label_source == "zero-shot" or not labels.scenes or labels.distortion is None:
                self._pending.append((image_id, path))
            self._targets[image_id] = _target_vectors(labels)

    def _known_labels(self, dataset: str, data: TrainingData) -> list[ImageLabels]:
        """Labels from LIQE's files and the dataset's layout (empty where neither has them)."""
        if self.label_source == "zero-shot":
            return [ImageLabels() for _ in data.ids]
        liqe = read_liqe_labels(self.labels) if self.labels else None
        layout = dataset_distortions(dataset, [str(p) for p in data.paths]) or [None] * len(data.ids)
        known = []
        for path, layout_type in zip(data.paths, layout):
            from_liqe = liqe.lookup(str(path)) if liqe else None
            scenes = from_liqe.scenes if from_liqe else ()
            distortion = from_liqe.distortion if from_liqe else layout_type
            self._label_counts["scene"]["liqe" if scenes else "zero-shot"] += 1
            self._label_counts["distortion"]["liqe" if from_liqe else
                                             f"dataset ({dataset_distortion_source(dataset)})"
                                             if distortion is not None else "zero-shot"] += 1
            known.append(ImageLabels(scenes, distortion))
        return known

    def _zero_shot_labels(self, clip: nn.Module, device: torch.device) -> None:
        """The frozen base CLIP's argmax classes for the images still without labels (training rows only),
        on the training device, once (the first step of a run or of a resumed run)."""
        if self.label_source == "zero-shot":
            self._label_counts = {"scene": Counter({"zero-shot": len(self._pending)}),
                                  "distortion": Counter({"zero-shot": len(self._pending)})}
        tokenizer = open_clip_module().get_tokenizer(self.arch)
        with torch.no_grad(), torch.autocast(device.type, enabled=False):
            texts = {family: F.normalize(clip.encode_text(tokenizer(zero_shot_prompts(family)).to(device)), dim=-1)
                     for family in ("scene", "distortion")}
            for start in range(0, len(self._pending), ZERO_SHOT_BATCH):
                chunk = self._pending[start:start + ZERO_SHOT_BATCH]
                pixels = torch.stack([self._centre_crop(path) for _, path in chunk]).to(device)
                image = F.normalize(clip.encode_image(pixels), dim=-1)
                scene = (image @ texts["scene"].T).argmax(dim=-1).tolist()
                distortion = (image @ texts["distortion"].T).argmax(dim=-1).tolist()
                for (image_id, _), s, d in zip(chunk, scene, distortion):
                    self._targets[image_id] = _filled(self._targets[image_id], s, d)
        self._pending = []

    def _centre_crop(self, path: Any) -> torch.Tensor:
        side = self.crop_side()
        pixels = np.asarray(training_data.read_rgb(path), dtype=np.float32) / 255.0
        image = torch.from_numpy(pixels).permute(2, 0, 1)
        height, width = image.shape[-2:]
        scale = side / min(height, width)
        image = F.interpolate(image[None], size=[max(side, round(height * scale)), max(side, round(width * scale))],
                              mode="bicubic", align_corners=False, antialias=True)[0].clamp(0, 1)
        top, left = (image.shape[-2] - side) // 2, (image.shape[-1] - side) // 2
        return clip_normalise(image[:, top:top + side, left:left + side])

    # --- the stage contract ---------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        base = self.base()
        return MpiqeModel(base.model, open_clip_module().get_tokenizer(self.arch), self.model_config())

    def sample(self, example: Example, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, str]:
        """(crops [crops, 3, side, side] CLIP-normalised, MOS mapped to [0, 1], the image id for its labels)."""
        if self._mos_range is None or example.mos is None:
            raise ValueError("mpiqe trains on MOS: its data must be a split's training rows")
        low, high = self._mos_range
        crops = random_crops(example.image, self.crops, self.crop_side(), generator)
        return clip_normalise(crops), torch.tensor((example.mos - low) / (high - low), dtype=torch.float32), \
            example.image_id

    def collate(self, samples: Sequence[tuple[torch.Tensor, torch.Tensor, str]]) -> tuple[torch.Tensor, torch.Tensor,
                                                                                        list[str]]:
        return (torch.stack([s[0] for s in samples]), torch.stack([s[1] for s in samples]),
                [s[2] for s in samples])

    def label_targets(self, ids: Sequence[str], device: torch.device) -> dict[str, torch.Tensor]:
        """[B, 9] scene and [B, 11] distortion targets of these images (zeros where unlabelled)."""
        classes = class_lists()
        empty = (torch.zeros(len(classes.scene)), torch.zeros(len(classes.distortion)))
        rows = [self._targets.get(image_id, empty) for image_id in ids]
        return {"scene": torch.stack([r[0] for r in rows]).to(device),
                "distortion": torch.stack([r[1] for r in rows]).to(device)}

    def loss(self, model: nn.Module, trainable: nn.Module, batch: tuple[torch.Tensor, torch.Tensor, list[str]],
             context: StepContext) -> torch.Tensor:
        crops, scores, ids = batch
        if self._pending:
            self._zero_shot_labels(model.clip, crops.device)
        per_image = crops.shape[1]
        output = trainable(crops.flatten(0, 1))
        targets = {key: value.repeat_interleave(per_image, dim=0)
                   for key, value in {**self.label_targets(ids, crops.device), "score": scores}.items()}
        return total_loss(output, targets, self.loss_weights(), self.score_loss, self.smooth_l1_beta)

    def export(self, model: nn.Module) -> Export:
        config: dict[str, Any] = {
            "feature_dim": model.embed_dim, "arch": self.arch, "quick_gelu": self.quick_gelu,
            "base_weights": self._base_identity, "mpiqe": model.config.to_dict(), "crops": self.crops,
            "crop_size": self.crop_side(), "mos_range": list(self._mos_range or ()),
            "normalization": {"mean": list(CLIP_MEAN), "std": list(CLIP_STD)},
            "lambda_score": self._lambda_score,
            "labels": {"source": self.label_source, "liqe_folder": self.labels,
                       "counts": {family: dict(counts) for family, counts in self._label_counts.items()}},
            "input": f"{self.crops} random crops of the ViT's input size (image upscaled if smaller), CLIP mean/std",
            "score": "mean over the crops of the head's output, MOS mapped from [0, 1] to the training range"}
        return Export(model.learned_state(), config)


def _target_vectors(labels: ImageLabels) -> tuple[torch.Tensor, torch.Tensor]:
    classes = class_lists()
    scene, distortion = torch.zeros(len(classes.scene)), torch.zeros(len(classes.distortion))
    if labels.scenes:
        scene[list(labels.scenes)] = 1.0
    if labels.distortion is not None:
        distortion[labels.distortion] = 1.0
    return scene, distortion


def _filled(targets: tuple[torch.Tensor, torch.Tensor], scene: int,
            distortion: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-shot classes where a family has no label yet."""
    scene_target, distortion_target = targets[0].clone(), targets[1].clone()
    if not scene_target.any():
        scene_target[scene] = 1.0
    if not distortion_target.any():
        distortion_target[distortion] = 1.0
    return scene_target, distortion_target
