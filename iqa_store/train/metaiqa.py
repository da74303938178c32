"""MetaIQA (Zhu et al., CVPR 2020) as two stages: a meta-learned quality prior, then per-split fine-tuning.

``metaiqa-prior`` (``Data.DATASETS_MOS``) meta-trains the network of ``iqa_store.nets.metaiqa``
on every row of KADID-10k and TID2013, read through their adapters. A task is one distortion
type of one dataset (the type is the middle field of the image name, ``I01_07_3.bmp``: 25 KADID
and 24 TID tasks). Each step draws ``tasks_per_step`` tasks and, for each, ``batch_size /
tasks_per_step`` of its images, split into a support part (``support_fraction``) and a query
part. The bi-level update (``bilevel_loss``): per task, ``inner_steps`` plain gradient steps of
rate ``inner_lr`` on the support loss from the shared weights; the query loss at the adapted
weights, averaged over the tasks, is what the trainer's optimiser (Adam) minimises. First-order
by default (the support gradients are constants of the outer gradient: FOMAML), exact
second-order with ``--second-order`` (differentiated through the inner steps). Targets: each
dataset's MOS mapped to [0, 1] by its declared range, against the sigmoid output, MSE. Under
torchrun a step's tasks are dealt to the processes (``tasks_per_step`` must divide among them)
and the meta-gradient is averaged over them (``shared_weights``).

A prior learns from the MOS of every row of its datasets: features of the prior, or of a model
fine-tuned from it, must never be evaluated on those datasets. The export records them
(``prior_datasets``); ``metaiqa`` refuses to fine-tune on one of them except with ``--protocol
train-all`` (no test rows; a cross-dataset training side), and extraction refuses them.

``metaiqa`` (``Data.IMAGES_MOS``) fine-tunes the whole network per split on that split's
training rows, from ``--prior`` (a registry encoder of ``metaiqa-prior``) or from ImageNet
weights: MSE between the sigmoid output and the MOS mapped to [0, 1] by the training rows' own
minimum and maximum (the official code scales CLIVE's 0-100 MOS to [0, 1]). Model selection:
with ``selection=validation`` (the default) the weights with the best SRCC on the split's
validation rows, checked every ``eval_every`` steps and after the last one; a protocol without
validation rows keeps the weights of the last step (a fixed epoch count). Test rows are never
read: they are not in the data a stage receives.

Departures from the official code (``../shared/SUPERVISED.md`` 3.2-3.3), each on purpose:

* the bi-level update instead of its per-batch Reptile-like averaging with a counter that
  resets every 5 batches and a different accumulation in its TID and KADID phases;
* the inner steps are plain gradient steps from the shared weights of that meta-step, and
  Adam only takes the outer step (its state is not shared with the inner loop);
* tasks of both datasets are drawn together, each step a fresh support/query draw (seeded by
  the step), instead of a TID phase then a KADID phase with an unseeded 80/20 re-split;
* the trainer's schedules (constant for the prior, cosine for fine-tuning; the head at
  ``head_lr_scale`` x the backbone's rate, 100 for the prior as the official 1e-2 / 1e-4)
  instead of a 0.9^(epoch/2) (fine-tuning: 0.8^(epoch/10)) factor applied again on every
  epoch, which compounds to about 1e-10 (1e-3) of the rate by epoch 29;
* selection on the split's validation rows (or the last step), never on test rows: the
  official fine-tuning reports the best test SROCC over its epochs;
* weights are safetensors, never whole-module pickles.
"""
from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from iqa_store.nets.metaiqa import (CROP, HEAD_WIDTHS, TRAIN_RESIZE, MetaIQANet, eval_view,
                                    imagenet_backbone_state, load_into, train_view)
from iqa_store.nets.resnet import BACKBONES
from iqa_store.nets.weights import read_state_dict
from iqa_store.splits import PROTOCOLS
from iqa_store.train import distributed
from iqa_store.train.data import TrainingData, derived_seed
from iqa_store.train.stage import Data, Example, Export, Stage, StepContext, TrainingDefaults, option

if TYPE_CHECKING:
    from iqa_store.store import FeatureStore

TASK_DATASETS = ("kadid10k", "tid2013")  # datasets whose image names carry the distortion type
SELECTIONS = ("validation", "last")
LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# --- the bi-level update ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Task:
    """One task of a meta-step: support inputs and targets, query inputs and targets."""

    support: tuple[torch.Tensor, torch.Tensor]
    query: tuple[torch.Tensor, torch.Tensor]


def adapted_parameters(model: nn.Module, parameters: Mapping[str, torch.Tensor],
                       support: tuple[torch.Tensor, torch.Tensor], loss: LossFunction, inner_lr: float,
                       inner_steps: int, second_order: bool) -> dict[str, torch.Tensor]:
    """``parameters`` after ``inner_steps`` gradient steps of rate ``inner_lr`` on the support loss.

    First-order: each step's gradient is a constant, so the adapted weights depend on the shared
    ones with an identity Jacobian; second-order: the gradient keeps its graph (create_graph).
    """
    fast = dict(parameters)
    inputs, targets = support
    for _ in range(inner_steps):  # functional_call takes the buffers (BatchNorm statistics) from the model
        value = loss(torch.func.functional_call(model, fast, (inputs,)), targets)
        grads = torch.autograd.grad(value, list(fast.values()), create_graph=second_order, allow_unused=True)
        fast = {name: weight if grad is None else weight - inner_lr * grad
                for (name, weight), grad in zip(fast.items(), grads)}
    return fast


def bilevel_loss(model: nn.Module, tasks: Sequence[Task], loss: LossFunction, inner_lr: float,
                 inner_steps: int = 1, second_order: bool = False,
                 parameters: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
    """The mean over ``tasks`` of the query loss at the weights adapted on the task's support set;
    its gradient with respect to the model's parameters is the meta-gradient. ``parameters``: the
    shared weights as tensors standing for the model's (default: its trainable parameters)."""
    if parameters is None:
        parameters = {name: p for name, p in model.named_parameters() if p.requires_grad}
    losses = []
    for task in tasks:
        fast = adapted_parameters(model, parameters, task.support, loss, inner_lr, inner_steps, second_order)
        inputs, targets = task.query
        losses.append(loss(torch.func.functional_call(model, fast, (inputs,)), targets))
    return torch.stack(losses).mean()


class _AveragedGradient(torch.autograd.Function):
    """Identity forward; backward: the gradient averaged over the processes. The meta-update runs
    the model through ``functional_call``, never through its DDP wrapper, so DDP's own gradient
    hooks do not fire: the shared weights enter the loss through this function instead."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        averaged = grad.contiguous().clone()
        torch.distributed.all_reduce(averaged)
        return averaged / torch.distributed.get_world_size()


def shared_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's trainable parameters, their gradients averaged over the processes under DDP."""
    parameters = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if not distributed.active():
        return parameters
    return {name: _AveragedGradient.apply(p) for name, p in parameters.items()}


# --- tasks ------------------------------------------------------------------------------------------

def distortion_task(image_id: str) -> str:
    """``kadid10k/I01_07_03.png`` -> ``kadid10k/07``: the dataset and the distortion type of an image."""
    dataset, _, name = image_id.partition("/")
    fields = Path(name).stem.split("_")
    if dataset not in TASK_DATASETS or len(fields) != 3 or not fields[1].isdigit():
        raise ValueError(f"metaiqa-prior: cannot tell the distortion type of {image_id!r}: tasks come from "
                         f"{' and '.join(TASK_DATASETS)} images named REF_TYPE_LEVEL")
    return f"{dataset}/{int(fields[1]):02d}"


@dataclass(frozen=True)
class TaskSampler:
    """Each step: ``tasks_per_step`` distinct tasks, ``per_task`` distinct images of each, task by task;
    process ``rank`` of ``world_size`` takes every world_size-th task.

    The draw depends on (seed, step) only, so a resumed run draws what an uninterrupted one does
    (and every process draws the same); the epoch of a key (what a sample's own random draws
    depend on) is step // steps_per_epoch.
    """

    tasks: tuple[tuple[int, ...], ...]
    tasks_per_step: int
    per_task: int
    seed: int
    start: int
    total: int
    steps_per_epoch: int
    rank: int = 0
    world_size: int = 1

    def __len__(self) -> int:
        return max(0, self.total - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.total):
            generator = torch.Generator().manual_seed(derived_seed(self.seed, step, 3))
            epoch = step // self.steps_per_epoch
            keys = []
            drawn = torch.randperm(len(self.tasks), generator=generator)[:self.tasks_per_step].tolist()
            for order, task in enumerate(drawn):
                images = self.tasks[task]
                chosen = torch.randperm(len(images), generator=generator)[:self.per_task]
                if order % self.world_size == self.rank:
                    keys += [(epoch, images[i]) for i in chosen]
            yield keys


# --- what both stages share ---------------------------------------------------------------------------

def _parse_roots(roots: str) -> dict[str, str]:
    parsed = {}
    for item in filter(None, (part.strip() for part in roots.split(","))):
        name, sep, folder = item.partition("=")
        if not sep or not name.strip() or not folder.strip():
            raise ValueError(f"metaiqa-prior: roots must be NAME=DIR, not {item!r}")
        parsed[name.strip()] = str(Path(folder.strip()).expanduser())  # the shell leaves ~ after = alone
    return parsed


@dataclass
class _MetaiqaStage(Stage):
    backbone: str = option("resnet18", "ResNet of the network (resnet18 in the paper; resnet-tiny for tests)")
    init: str = option("imagenet", "the ResNet's starting weights (metaiqa: without --prior): imagenet "
                                   "(torchvision's, via torch hub's cache), random, or a file of torchvision ResNet "
                                   "keys (safetensors or tensors only)")
    dropout: float = option(0.5, "dropout before the head's second and third linear layers")
    resize: int = option(TRAIN_RESIZE, "training views: the image resized to this square side first")
    crop: int = option(CROP, "training views: a random crop of this side; at extraction the whole image is "
                             "resized to it")
    head_lr_scale: float = option(1.0, "the head's learning rate as a multiple of the backbone's (--lr)")

    def check_network(self) -> None:
        BACKBONES.get(self.backbone)  # RegistryError for an unknown name
        if not 0 <= self.dropout < 1 or not 0 < self.crop <= self.resize or self.head_lr_scale < 0:
            raise ValueError(f"{self.name}: dropout must be in [0, 1), 0 < crop <= resize and head_lr_scale >= 0")

    def parameter_groups(self, trainable: nn.Module) -> list[dict[str, Any]]:
        """The backbone at the schedule's rate, the head at ``head_lr_scale`` times it."""
        return [{"params": list(trainable.backbone.parameters())},
                {"params": list(trainable.head.parameters()), "lr_scale": self.head_lr_scale}]

    def new_network(self) -> MetaIQANet:
        """The network at its starting weights (``init``), after the trainer seeded torch."""
        net = MetaIQANet(self.backbone, self.dropout)
        if self.init == "imagenet":
            load_into(net.backbone, imagenet_backbone_state(self.backbone), f"torchvision's {self.backbone}")
        elif self.init != "random":
            load_into(net.backbone, read_state_dict(self.init), self.init)
        return net

    def sample(self, example: Example, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if example.mos is None:
            raise ValueError(f"{self.name} learns from MOS: its data carries none")
        return train_view(example.image, generator, self.resize, self.crop), torch.tensor(self.target(example.mos))

    def target(self, mos: float) -> float:
        return mos

    def collate(self, samples: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.stack([s[0] for s in samples]), torch.stack([s[1] for s in samples]).float()

    def network_config(self) -> dict[str, Any]:
        return {"feature_dim": HEAD_WIDTHS[-1], "backbone": self.backbone, "size": self.crop,
                "input": f"whole image resized to {self.crop}x{self.crop}, ImageNet mean/std"}


# --- the prior ----------------------------------------------------------------------------------------------

@dataclass
class MetaiqaPriorStage(_MetaiqaStage):
    """MetaIQA's quality prior: bi-level meta-learning over distortion-type tasks of KADID-10k and TID2013."""

    name: ClassVar[str] = "metaiqa-prior"
    data: ClassVar[Data] = Data.DATASETS_MOS
    reader: ClassVar[str] = "metaiqa"
    # official: Adam, backbone lr 1e-4, 50 epochs, 5 tasks, support batch 75 + query batch 50 per task
    defaults: ClassVar[TrainingDefaults] = TrainingDefaults(epochs=50, batch_size=625, lr=1e-4, optimizer="adam",
                                                            weight_decay=0.0, schedule="constant")

    head_lr_scale: float = option(100.0, "the head's learning rate as a multiple of the backbone's (--lr); "
                                         "official: 1e-2 and 1e-4")
    datasets: str = option(",".join(TASK_DATASETS), "datasets whose distortion types are the tasks, every row of each")
    roots: str = option("", "NAME=DIR[,NAME=DIR]: where each dataset is (empty: each adapter's environment "
                            "variable, $IQA_KADID_ROOT and $IQA_TID2013_ROOT)")
    tasks_per_step: int = option(5, "tasks per meta-step (the official task_num)")
    support_fraction: float = option(0.6, "share of a task's images in its support part (official 75 of 125)")
    inner_lr: float = option(1e-2, "rate of the inner (support) gradient steps")
    inner_steps: int = option(1, "inner gradient steps per task")
    second_order: bool = option(False, "differentiate through the inner steps (exact MAML gradient) instead of "
                                       "the first-order approximation")

    def __post_init__(self) -> None:
        self._tasks: tuple[tuple[int, ...], ...] = ()
        self._task_names: tuple[str, ...] = ()
        self._per_task = 0

    def check(self) -> None:
        self.check_network()
        unknown = sorted(set(self.dataset_names()) - set(TASK_DATASETS))
        if unknown or not self.dataset_names():
            raise ValueError(f"metaiqa-prior: tasks come from {list(TASK_DATASETS)} (their image names give the "
                             f"distortion type), not {unknown or 'no dataset'}")
        if self.tasks_per_step < 1 or self.inner_steps < 1 or self.inner_lr <= 0 or not 0 < self.support_fraction < 1:
            raise ValueError("metaiqa-prior: tasks_per_step and inner_steps must be positive, inner_lr positive and "
                             "support_fraction in (0, 1)")
        _parse_roots(self.roots)

    def dataset_names(self) -> list[str]:
        return [name.strip() for name in self.datasets.split(",") if name.strip()]

    def own_data(self) -> TrainingData:
        """Every row of each dataset, MOS mapped to [0, 1] by the dataset's declared range."""
        from iqa_store.datasets import DATASETS, load_manifest
        roots = _parse_roots(self.roots)
        paths: list[Path] = []
        ids: list[str] = []
        mos: list[float] = []
        sources = []
        for dataset in self.dataset_names():
            adapter = DATASETS.get(dataset)
            if dataset not in roots and not os.environ.get(adapter.env_var or ""):
                raise ValueError(f"metaiqa-prior: where is {dataset}? Give --roots {dataset}=DIR or set "
                                 f"{adapter.env_var} (layout: {adapter.layout})")
            manifest = load_manifest(dataset, roots.get(dataset))
            low, high = manifest.mos_range
            paths += manifest.paths
            ids += [f"{dataset}/{image_id}" for image_id in manifest.ids]
            mos += ((manifest.mos - low) / (high - low)).tolist()
            sources.append(f"{dataset} ({manifest.root})")
        return TrainingData.from_paths("datasets " + ", ".join(sources), paths, ids, mos)

    def prepare(self, data: TrainingData) -> None:
        if data.mos is None:
            raise ValueError("metaiqa-prior learns from MOS: its data carries none")
        by_task: dict[str, list[int]] = {}
        for index, image_id in enumerate(data.ids):
            by_task.setdefault(distortion_task(image_id), []).append(index)
        self._task_names = tuple(sorted(by_task))
        self._tasks = tuple(tuple(by_task[name]) for name in self._task_names)

    def batches(self, images: int, batch_size: int, seed: int, start: int, total: int, rank: int = 0,
                world_size: int = 1) -> TaskSampler:
        if self.tasks_per_step % world_size:
            raise ValueError(f"metaiqa-prior: tasks_per_step {self.tasks_per_step} does not divide among "
                             f"{world_size} processes (each takes whole tasks)")
        if batch_size % self.tasks_per_step:
            raise ValueError(f"metaiqa-prior: batch size {batch_size} (images per meta-step) must be a multiple of "
                             f"tasks_per_step {self.tasks_per_step}")
        per_task = batch_size // self.tasks_per_step
        if len(self._tasks) < self.tasks_per_step:
            raise ValueError(f"metaiqa-prior: {len(self._tasks)} task(s) in the data, fewer than tasks_per_step "
                             f"{self.tasks_per_step}")
        small = [f"{name} ({len(t)})" for name, t in zip(self._task_names, self._tasks) if len(t) < per_task]
        if small:
            raise ValueError(f"metaiqa-prior: each task gives {per_task} images a step (batch size / tasks_per_step), "
                             f"more than these tasks have: {', '.join(small[:5])}")
        self._per_task = per_task
        self._split_sizes()  # refuses an empty support or query part before the first step
        return TaskSampler(self._tasks, self.tasks_per_step, per_task, seed, start, total, max(1, images // batch_size),
                           rank, world_size)

    def _split_sizes(self) -> tuple[int, int]:
        support = int(round(self.support_fraction * self._per_task))
        if not 0 < support < self._per_task:
            raise ValueError(f"metaiqa-prior: {self._per_task} images per task cannot be split into non-empty "
                             f"support and query parts at support_fraction {self.support_fraction}")
        return support, self._per_task - support

    def build_model(self) -> nn.Module:
        return self.new_network()

    def loss(self, model: nn.Module, trainable: nn.Module, batch: tuple[torch.Tensor, torch.Tensor],
             context: StepContext) -> torch.Tensor:
        images, targets = batch
        support, _ = self._split_sizes()
        tasks = [Task((x[:support], y[:support]), (x[support:], y[support:]))
                 for x, y in zip(images.split(self._per_task), targets.split(self._per_task))]
        model = getattr(trainable, "module", trainable)  # under DDP: the wrapped network (see shared_weights)
        return bilevel_loss(model, tasks, F.mse_loss, self.inner_lr, self.inner_steps, self.second_order,
                            shared_weights(model))

    def export(self, model: nn.Module) -> Export:
        datasets = sorted({name.split("/")[0] for name in self._task_names})
        config = {**self.network_config(), "mos_range": [0.0, 1.0], "prior_datasets": datasets,
                  "tasks": list(self._task_names),
                  "targets": "each dataset's MOS mapped to [0, 1] by its declared range"}
        return Export({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, config)


# --- fine-tuning per split ----------------------------------------------------------------------------

class SelectedNetwork(nn.Module):
    """The network being trained and a copy of the weights selected so far (in every checkpoint)."""

    def __init__(self, net: MetaIQANet) -> None:
        super().__init__()
        self.net = net
        self.best = copy.deepcopy(net).requires_grad_(False)
        self.register_buffer("best_srcc", torch.tensor(-math.inf, dtype=torch.float64))
        self.register_buffer("best_step", torch.tensor(-1, dtype=torch.int64))


@dataclass
class MetaiqaStage(_MetaiqaStage):
    """MetaIQA fine-tuned per split on its training rows, from a metaiqa-prior encoder (or ImageNet)."""

    name: ClassVar[str] = "metaiqa"
    data: ClassVar[Data] = Data.IMAGES_MOS
    reader: ClassVar[str] = "metaiqa"
    # official fine-tuning: Adam lr 1e-4, no weight decay, batch 50, 100 epochs
    defaults: ClassVar[TrainingDefaults] = TrainingDefaults(epochs=100, batch_size=50, lr=1e-4, optimizer="adam",
                                                            weight_decay=0.0, schedule="cosine")

    prior: str = option("", "registry encoder of `iqa-store train metaiqa-prior` (NAME[/FINGERPRINT]); "
                            "empty: start from --init")
    selection: str = option("validation", "validation: the weights with the best SRCC on the split's val rows "
                                          "(the last step's without val rows); last: the last step's")
    eval_every: int = option(20, "steps between validation checks (and one after the last step)")

    def __post_init__(self) -> None:
        self._prior_state: dict[str, torch.Tensor] | None = None
        self._prior_datasets: tuple[str, ...] = ()
        self._mos_range: tuple[float, float] = (0.0, 1.0)
        self._validation: tuple[torch.Tensor, np.ndarray] | None = None
        self._total: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)  # DataLoader workers make samples: they need neither of these
        state["_validation"] = state["_prior_state"] = None
        return state

    def check(self) -> None:
        self.check_network()
        if self.selection not in SELECTIONS or self.eval_every < 1:
            raise ValueError(f"metaiqa: selection must be one of {SELECTIONS} and eval_every positive")

    def attach(self, store: "FeatureStore") -> None:
        """Resolve ``prior`` to one registry encoder (its full id is then part of the run's identity)."""
        if not self.prior:
            return
        from iqa_store.store import StoreError, get_encoder
        try:
            record = get_encoder(store, self.prior)
        except StoreError as error:
            raise ValueError(f"metaiqa: prior {self.prior!r}: {error}") from None
        if record.config.get("stage") != MetaiqaPriorStage.name:
            raise ValueError(f"metaiqa: {record.id} was trained by {record.config.get('stage')!r}, not metaiqa-prior")
        if record.config.get("backbone") != self.backbone:
            raise ValueError(f"metaiqa: prior {record.id} is a {record.config.get('backbone')} network: "
                             f"give backbone {record.config.get('backbone')}")
        self.prior = record.id
        self._prior_state = record.load_state_dict()
        self._prior_datasets = tuple(record.config.get("prior_datasets", ()))

    def prepare(self, data: TrainingData) -> None:
        if data.mos is None or data.scope is None:
            raise ValueError("metaiqa trains on MOS: its data must be a split's training rows")
        if data.scope.dataset in self._prior_datasets and PROTOCOLS.get(data.scope.protocol).tested:
            raise ValueError(f"metaiqa: prior {self.prior} learned from the MOS of every row of {data.scope.dataset}: "
                             f"its test rows would be scored by a model trained on them. Fine-tune on a dataset the "
                             f"prior did not see, or meta-train a prior without it (metaiqa-prior --datasets)")
        # the training rows' own range: a csv dataset's declared range is its min and max over every
        # row, test rows included
        low, high = min(data.mos), max(data.mos)
        if not high > low:
            raise ValueError(f"metaiqa: every training row has MOS {low}: nothing to learn")
        self._mos_range = (low, high)
        self._validation = None
        if self.selection == "validation" and data.validation is not None:
            self._validation = self._decoded(data.validation)

    def _decoded(self, validation: TrainingData) -> tuple[torch.Tensor, np.ndarray]:
        """The validation images as the extractor sees them (kept in half precision) and their MOS."""
        from iqa_store.images import read_rgb
        views = []
        for path in validation.paths:
            pixels = torch.from_numpy(np.asarray(read_rgb(path), dtype=np.float32) / 255.0).permute(2, 0, 1)
            views.append(eval_view(pixels, self.crop).half())
        return torch.stack(views), np.asarray(validation.mos, dtype=np.float64)

    def target(self, mos: float) -> float:
        low, high = self._mos_range
        return (mos - low) / (high - low)

    def build_model(self) -> nn.Module:
        net = self.new_network() if self._prior_state is None else MetaIQANet(self.backbone, self.dropout)
        if self._prior_state is not None:
            load_into(net, self._prior_state, f"prior {self.prior}")
        return SelectedNetwork(net)

    def trainable(self, model: nn.Module) -> nn.Module:
        return model.net

    def loss(self, model: nn.Module, trainable: nn.Module, batch: tuple[torch.Tensor, torch.Tensor],
             context: StepContext) -> torch.Tensor:
        self._total = context.total
        if context.step and context.step % self.eval_every == 0:
            self._consider(model, context.step)  # the weights after `step` updates
        images, targets = batch
        return F.mse_loss(trainable(images), targets)

    def _consider(self, model: nn.Module, step: int) -> None:
        """Keep the network's weights if their validation SRCC beats the best so far."""
        if self._validation is None:
            return
        from scipy.stats import spearmanr
        images, mos = self._validation
        net = model.net
        was_training = net.training
        net.eval()
        with torch.no_grad():
            device = next(net.parameters()).device
            scores = torch.cat([net(chunk.to(device).float()) for chunk in images.split(32)]).double().cpu().numpy()
        net.train(was_training)
        srcc = float(spearmanr(scores, mos)[0])
        if math.isfinite(srcc) and srcc > float(model.best_srcc):
            model.best.load_state_dict(net.state_dict())
            model.best_srcc.fill_(srcc)
            model.best_step.fill_(step)

    def export(self, model: nn.Module) -> Export:
        selection: dict[str, Any] = {"mode": self.selection if self._validation is not None else "last"}
        if self._validation is not None:
            self._consider(model, self._total if self._total is not None else -1)
            selection.update(step=int(model.best_step), validation_srcc=float(model.best_srcc),
                             validation_images=len(self._validation[1]))
            chosen = model.best
        else:
            chosen = model.net
        config = {**self.network_config(), "mos_range": list(self._mos_range), "prior": self.prior or None,
                  "prior_datasets": list(self._prior_datasets), "selection": selection,
                  "targets": "MOS mapped to [0, 1] by the training rows' min and max"}
        return Export({k: v.detach().cpu().contiguous() for k, v in chosen.state_dict().items()}, config)
