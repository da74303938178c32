"""A conformance suite every training stage runs (needs pytest).

Subclass ``StageTests`` in a test module, set ``stage_name``, ``tiny_hyperparameters``,
``invalid_hyperparameters`` and ``training`` (TrainConfig fields for a CPU run of seconds), and
provide the fixtures ``training_data`` (the stage's data: a folder or a split's training rows)
``read_export`` (extracts two images with the stage's reader from a registry record and
returns the feature matrix) and ``stage_cli`` (the CLI's help and options of a stage): the
train layer imports neither extraction nor the CLI, so the test module brings them. The class name does not start with ``Test``, so pytest collects only subclasses.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import pytest
import torch

from iqa_store.registry import RegistryError
from iqa_store.store import FeatureStore
from iqa_store.train import STAGES
from iqa_store.train import trainer as trainer_module
from iqa_store.train.data import ExampleDataset, TrainingData
from iqa_store.train.stage import Stage
from iqa_store.train.trainer import TrainConfig, TrainingInterrupted, train

__all__ = ["StageTests"]


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return bool(a == b)


class StageTests:
    stage_name: ClassVar[str]
    tiny_hyperparameters: ClassVar[dict[str, Any]]
    invalid_hyperparameters: ClassVar[dict[str, Any]]
    training: ClassVar[dict[str, Any]]
    steps: ClassVar[int] = 4

    @pytest.fixture
    def training_data(self, tmp_path: Path) -> TrainingData:
        raise NotImplementedError("a StageTests subclass provides the stage's training data")

    @pytest.fixture
    def read_export(self) -> Callable[[Any, FeatureStore], np.ndarray]:
        raise NotImplementedError("a StageTests subclass provides its reader's extraction")

    @pytest.fixture
    def stage_cli(self) -> Callable[[str], tuple[str, list, Callable]]:
        raise NotImplementedError("a StageTests subclass provides the CLI's view of a stage")

    def stage(self) -> Stage:
        return STAGES.get(self.stage_name)(**self.tiny_hyperparameters)

    def run(self, data: TrainingData, store: Path, **overrides: Any) -> Any:
        config = TrainConfig(**{"steps": self.steps, "seed": 0, "device": "cpu", "workers": 0, **self.training,
                                **overrides})
        return train(self.stage(), data, config, FeatureStore(store), progress=False, log=lambda line: None)

    # --- the contract ---------------------------------------------------------------------------
    def test_samples_depend_only_on_the_seed(self, training_data: TrainingData) -> None:
        stage = self.stage()
        stage.prepare(training_data)
        first, again = ExampleDataset(training_data, stage, 0), ExampleDataset(training_data, stage, 0)
        other = ExampleDataset(training_data, stage, 1)
        assert _equal(first[(0, 0)], again[(0, 0)])
        assert _equal(first[(2, 1)], again[(2, 1)])
        assert not _equal(first[(0, 0)], other[(0, 0)])

    def test_a_tiny_run_has_finite_losses_and_registers_its_reader(self, training_data: TrainingData,
                                                                   tmp_path: Path) -> None:
        report = self.run(training_data, tmp_path / "store")
        assert len(report.losses) == self.steps and np.isfinite(report.losses).all()
        config = report.encoder.config
        assert config["reader"] == STAGES.get(self.stage_name).reader and config["feature_dim"] > 0
        assert config["hyperparameters"] == dataclasses.asdict(self.stage())
        assert report.encoder.scope == training_data.scope

    def test_an_interrupted_run_resumes_to_the_same_weights(self, training_data: TrainingData, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
        whole = self.run(training_data, tmp_path / "whole")
        real_step, calls = trainer_module._step, {"n": 0}
        flag = trainer_module._StopFlag()

        def counted(*args: Any, **kwargs: Any) -> float:
            loss = real_step(*args, **kwargs)
            calls["n"] += 1
            flag.requested = calls["n"] >= self.steps // 2  # as SIGINT after half the run
            return loss

        from contextlib import contextmanager

        @contextmanager
        def stop_flag() -> Any:
            yield flag

        with monkeypatch.context() as patch:
            patch.setattr(trainer_module, "_step", counted)
            patch.setattr(trainer_module, "_stop_on_signals", stop_flag)
            with pytest.raises(TrainingInterrupted, match=f"stopped at step {self.steps // 2}"):
                self.run(training_data, tmp_path / "stopped")
        resumed = self.run(training_data, tmp_path / "stopped")
        assert resumed.status == "resumed" and resumed.start_step == self.steps // 2
        expected, actual = whole.encoder.load_state_dict(), resumed.encoder.load_state_dict()
        assert expected.keys() == actual.keys()
        assert all(torch.equal(expected[key], actual[key]) for key in expected)  # bit for bit on CPU
        assert resumed.encoder.provenance["loss_curve"] == whole.encoder.provenance["loss_curve"]

    def test_the_export_loads_into_its_reader(self, training_data: TrainingData, tmp_path: Path,
                                              read_export: Callable[[Any, FeatureStore], np.ndarray]) -> None:
        report = self.run(training_data, tmp_path / "store")
        features = read_export(report.encoder, FeatureStore(tmp_path / "store"))
        assert features.ndim == 2 and features.shape[0] >= 2 and np.isfinite(features).all()

    def test_every_field_is_a_cli_option_with_its_default(self, stage_cli: Any) -> None:
        """``stage_cli``: (help text of ``iqa-store train STAGE``, the options of the stage's fields,
        the function turning parsed options back into field values), from the CLI layer."""
        shown, options, values = stage_cli(self.stage_name)
        stage_type = STAGES.get(self.stage_name)
        for f in dataclasses.fields(stage_type):
            flag = "--" + f.name.replace("_", "-")
            assert flag in shown, flag
            # click shows a flag's default by its name: [default: x] or [default: no-x]
            default = ("" if f.default else "no-") + flag[2:] if isinstance(f.default, bool) else str(f.default)
            assert default in shown.split(flag, 1)[1][:400], (flag, default)
        by_name = {o.name: o for o in options}
        params = {name: value if isinstance(value, bool) else by_name[name].type_cast_value(None, str(value))
                  for name, value in self.tiny_hyperparameters.items()}
        assert values(stage_type, params) == self.tiny_hyperparameters

    def test_settings_that_cannot_work_are_refused(self) -> None:
        with pytest.raises((ValueError, RegistryError)):  # both are one-line user errors in the CLI
            STAGES.get(self.stage_name)(**{**self.tiny_hyperparameters, **self.invalid_hyperparameters}).check()
