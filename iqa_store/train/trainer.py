"""Run any stage: the loop, schedules, optimisers, exact checkpoints, DDP, progress, the registry write.

What is shared by every learned model lives here; what differs (data, model, loss, export)
is the stage's (``iqa_store.train.stage``). One optimiser step per batch of ``batch_size``
source images. The learning rate follows a cosine curve over the whole run (after an optional
linear warm-up) or stays constant, computed from the step number alone. A checkpoint holds the
whole model (for MoCo: both encoders and the queue), the optimiser and the loss curve; every
random draw is a function of (seed, step), so a run resumed from a checkpoint ends with
the same weights as one that never stopped (bit for bit on CPU; on CUDA, convolution kernels
are not bitwise deterministic unless ``torch.use_deterministic_algorithms`` is set, so a
resumed GPU run matches to floating-point noise).

A rerun of a finished configuration does no work: the registry already holds an encoder
whose provenance names the same run fingerprint.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from iqa_store.fingerprint import fingerprint
from iqa_store.train import distributed
from iqa_store.train.data import ExampleDataset, TrainingData, derived_seed
from iqa_store.train.stage import Stage, StepContext
from iqa_store.store.encoders import EncoderRecord, list_encoders, save_encoder
from iqa_store.store.featureset import now_iso
from iqa_store.store.store import FeatureStore, package_versions

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_FORMAT = 1
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "constant")


class TrainingInterrupted(RuntimeError):
    """Stopped by a signal after writing a checkpoint; the same command resumes."""


@dataclass
class TrainConfig:
    """How to train; ``None`` takes the stage's published default (``Stage.defaults``)."""

    epochs: int | None = None
    steps: int | None = None  # total optimiser steps; overrides epochs
    batch_size: int | None = None
    lr: float | None = None
    optimizer: str | None = None
    weight_decay: float | None = None
    schedule: str | None = None
    warmup_steps: int | None = None  # None: the stage's warm-up epochs, in steps
    seed: int = 0
    precision: str = "fp32"  # bf16 autocast on CUDA only
    # run-time knobs: they never change the weights
    device: str = "cpu"
    workers: int = 0
    checkpoint_every: int = 100
    name: str | None = None  # registry name; the stage's name by default

    def resolved(self, stage: Stage) -> "TrainConfig":
        defaults = stage.defaults
        given = asdict(self)  # warm-up epochs are not a config field: _train turns them into warmup_steps
        config = TrainConfig(**{**given, **{k: v for k, v in asdict(defaults).items() if k in given and given[k] is None}})
        if config.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, not {config.optimizer!r}")
        if config.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, not {config.schedule!r}")
        if config.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16, not {config.precision!r}")
        if config.precision == "bf16" and not config.device.startswith("cuda"):
            raise ValueError("bf16 training needs a CUDA device")
        return config

    def weights_relevant(self) -> dict[str, Any]:
        """What changes the trained weights (the run fingerprint's part of the config)."""
        keys = ("batch_size", "lr", "optimizer", "weight_decay", "warmup_steps", "seed", "precision")
        relevant = {k: getattr(self, k) for k in keys}
        if self.schedule != "cosine":  # only when not the default: runs from before the option keep their identity
            relevant["schedule"] = self.schedule
        return relevant


@dataclass
class TrainReport:
    stage: str
    status: str  # trained, resumed or cached
    encoder: EncoderRecord
    steps: int
    start_step: int
    losses: list[float]
    seconds: float
    skipped_images: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{self.stage}: {self.status}, encoder {self.encoder.id}"]
        if self.status != "cached":
            first, last = _window_mean(self.losses[:10]), _window_mean(self.losses[-10:])
            lines.append(f"  steps {self.start_step}->{self.steps} in {self.seconds:.1f} s; "
                         f"loss {first:.4f} (first 10) -> {last:.4f} (last 10)")
        lines += [f"  skipped {item}" for item in self.skipped_images]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "status": self.status, "encoder": self.encoder.id, "steps": self.steps,
                "start_step": self.start_step, "losses": self.losses, "seconds": self.seconds,
                "skipped_images": self.skipped_images}


def train(stage: Stage, images: TrainingData, config: TrainConfig, store: FeatureStore, *,
          checkpoint_dir: str | Path | None = None, progress: bool = True,
          log: Callable[[str], None] = print) -> TrainReport:
    """Train ``stage`` on ``images`` (resuming its checkpoint if any) and register the encoder."""
    config = config.resolved(stage)
    stage.check()
    device = distributed.init(config.device)
    try:
        return _train(stage, images, config, store, device, checkpoint_dir, progress, log)
    finally:
        distributed.shutdown()


def _train(stage: Stage, images: TrainingData, config: TrainConfig, store: FeatureStore, device: str,
           checkpoint_dir: str | Path | None, progress: bool, log: Callable[[str], None]) -> TrainReport:
    started = time.perf_counter()
    stage.attach(store)  # before the run's identity: what it resolves (a prior's id) is part of it
    world = distributed.world_size()
    steps_per_epoch = len(images.paths) // config.batch_size
    total = config.steps or config.epochs * steps_per_epoch
    if config.warmup_steps is None:
        config = replace(config, warmup_steps=round(stage.defaults.warmup_epochs * max(1, steps_per_epoch)))
    run = _run_fingerprint(stage, images, config, total, world)
    name = config.name or stage.name
    cached = [r for r in list_encoders(store) if r.name == name and r.provenance.get("run") == run]
    if cached:
        return TrainReport(stage.name, "cached", cached[0], total, total, [], 0.0, list(images.skipped))
    for item in images.skipped:
        log(f"skipping unreadable image {item}")

    stage.prepare(images)
    torch.manual_seed(config.seed)  # identical initial weights (and queue) on every process
    model = stage.build_model().to(device)
    optimizer = _optimizer(stage.parameter_groups(stage.trainable(model)), config)
    folder = Path(checkpoint_dir) if checkpoint_dir else store.pretrain_dir / f"{name}-{run}"
    start, losses = _resume(folder / CHECKPOINT_FILE, run, model, optimizer, device, log)
    trainable = stage.trainable(model)
    if distributed.active():
        trainable = torch.nn.parallel.DistributedDataParallel(
            trainable, device_ids=[device] if device.startswith("cuda") else None)

    sampler = stage.batches(len(images.paths), config.batch_size, config.seed, start, total, distributed.rank(), world)
    loader = torch.utils.data.DataLoader(ExampleDataset(images, stage, config.seed), batch_sampler=sampler,
                                         num_workers=config.workers, collate_fn=stage.collate,
                                         worker_init_fn=_one_thread, pin_memory=device.startswith("cuda"))
    model.train()
    step = start
    bar = _progress(progress and distributed.rank() == 0, start, total, stage.name)
    with _stop_on_signals() as stop:
        for batch in loader:
            loss = _step(stage, model, trainable, optimizer, batch, step, total, config, device)
            losses.append(loss)
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
            if step == total or step % config.checkpoint_every == 0 or stop.requested:
                _save_checkpoint(folder / CHECKPOINT_FILE, run, step, model, optimizer, losses)
            if stop.requested and step < total:
                bar.close()
                raise TrainingInterrupted(f"stopped at step {step} of {total}; checkpoint in {folder}. "
                                          "Run the same command again to resume.")
    bar.close()
    record = _register(store, name, model, stage, images, config, run, total, losses, device, world, start)
    if distributed.rank() == 0:
        _remove_checkpoint(folder)
    return TrainReport(stage.name, "resumed" if start else "trained", record, total, start, losses,
                       time.perf_counter() - started, list(images.skipped))


def _step(stage: Stage, model: torch.nn.Module, trainable: torch.nn.Module, optimizer: torch.optim.Optimizer,
          batch: Any, step: int, total: int, config: TrainConfig, device: str) -> float:
    rate = (learning_rate(step, total, config.lr, config.warmup_steps) if config.schedule == "cosine"
            else constant_rate(step, config.lr, config.warmup_steps))
    for group in optimizer.param_groups:
        group["lr"] = rate * group.get("lr_scale", 1.0)
    batch = _to_device(batch, device)
    # draws from torch's global generator (dropout) are a function of the step too, or a resumed
    # run would draw differently from one that never stopped
    torch.manual_seed(derived_seed(config.seed, step, 2))
    # a per-step generator, the same on every process (MoCo: the shuffle BN permutation)
    context = StepContext(step, total, torch.Generator().manual_seed(derived_seed(config.seed, step, 1)))
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=config.precision == "bf16"):
        loss = stage.loss(model, trainable, batch, context)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(distributed.gather(loss.detach().float()[None]).mean())


def learning_rate(step: int, total: int, base: float, warmup: int = 0) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine annealing to zero at ``total``."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * progress))


def constant_rate(step: int, base: float, warmup: int = 0) -> float:
    """Linear warm-up over ``warmup`` steps, then ``base`` to the end."""
    return base * (step + 1) / warmup if step < warmup else base


def _to_device(batch: Any, device: str) -> Any:
    """Tensors of a batch (nested in tuples, lists or dicts) on ``device``; anything else as it is."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to_device(item, device) for item in batch)
    if isinstance(batch, dict):
        return {key: _to_device(value, device) for key, value in batch.items()}
    return batch


def _optimizer(parameters: list[dict[str, Any]], config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)


def _run_fingerprint(stage: Stage, images: TrainingData, config: TrainConfig, total: int, world: int) -> str:
    identity = {"stage": stage.name, "hyperparameters": stage.hyperparameters(), "data": images.identity,
                "training": config.weights_relevant(), "steps": total, "world_size": world,
                "code": package_versions().get("iqa-store", "")}
    if images.scope is not None:  # two splits with the same training rows are still two encoders, one per split
        identity["scope"] = images.scope.to_dict()
    return fingerprint(identity)


def _resume(path: Path, run: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: str,
            log: Callable[[str], None]) -> tuple[int, list[float]]:
    if not path.is_file():
        return 0, []
    try:
        state = torch.load(path, map_location=device, weights_only=True)  # never unpickle
    except Exception as error:  # torch raises UnpicklingError, RuntimeError... for foreign or damaged files
        raise ValueError(f"cannot read checkpoint {path}: {type(error).__name__}: {str(error).splitlines()[0]}") from None
    if state.get("format") != CHECKPOINT_FORMAT or state.get("run") != run:
        raise ValueError(f"checkpoint {path} belongs to another run (settings, data or code differ); "
                         "remove it or pass another --checkpoint-dir")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    log(f"resuming from step {state['step']} ({path})")
    return int(state["step"]), [float(v) for v in state["losses"]]


def _save_checkpoint(path: Path, run: str, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     losses: list[float]) -> None:
    if distributed.rank() != 0:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save({"format": CHECKPOINT_FORMAT, "run": run, "step": step, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "losses": torch.tensor(losses, dtype=torch.float64)}, partial)
    os.replace(partial, path)  # a kill mid-write leaves the previous checkpoint intact


def _remove_checkpoint(folder: Path) -> None:
    for name in (CHECKPOINT_FILE, Path(CHECKPOINT_FILE).with_suffix(".partial").name):
        (folder / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        folder.rmdir()


def _register(store: FeatureStore, name: str, model: torch.nn.Module, stage: Stage, images: TrainingData,
              config: TrainConfig, run: str, total: int, losses: list[float], device: str, world: int,
              start: int) -> EncoderRecord:
    """Rank 0 writes the stage's export; the others wait for it and read the same record."""
    if distributed.rank() == 0:
        exported = stage.export(model)
        config_record = {**exported.config, "stage": stage.name, "reader": stage.reader,
                         "hyperparameters": stage.hyperparameters()}
        save_encoder(store, name, exported.state_dict, config_record, {
            "run": run, "data": images.describe(), "steps": total, "resumed_from_step": start,
            "epochs": total * config.batch_size / len(images.paths), "loss_curve": losses, "seed": config.seed,
            "training": config.weights_relevant(), "device": device, "world_size": world,
            "code_version": package_versions(), "finished": now_iso()}, scope=images.scope)
    if distributed.active():
        torch.distributed.barrier()
    return [r for r in list_encoders(store) if r.name == name and r.provenance.get("run") == run][0]


class _StopFlag:
    requested = False


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[_StopFlag]:
    """SIGINT / SIGTERM (Ctrl-C, a scheduler's pre-emption) finish the step and checkpoint."""
    flag = _StopFlag()

    def request(signum: int, frame: Any) -> None:
        flag.requested = True

    if _in_main_thread():
        previous = {sig: signal.signal(sig, request) for sig in (signal.SIGINT, signal.SIGTERM)}
    else:
        previous = {}
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _in_main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


def _one_thread(worker_id: int) -> None:
    torch.set_num_threads(1)  # workers decode and distort; many threads each would oversubscribe


def _progress(enabled: bool, start: int, total: int, name: str) -> Any:
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=start, desc=name, unit="step", disable=not enabled, dynamic_ncols=True)


def _window_mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")
