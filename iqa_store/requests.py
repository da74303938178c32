"""Jobs as data: one frozen dataclass per kind of job, the only description of it.

The CLI makes its options from these fields (``iqa_store.cli.fields``), the Python API takes
them, a pipeline YAML step is one of them (without the dataset, which the pipeline's dataset
list gives), and a Dask task carries one. Field metadata says how the CLI shows a field:
``help``, ``flags`` (extra short flags), ``metavar``, ``choices``, ``cli`` False to leave it out.

No imports beyond the standard library and ``iqa_store.registry`` (itself standard library
only): every layer can read a request.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from iqa_store.registry import checked_options


def arg(default: Any = None, help: str = "", *, flags: tuple[str, ...] = (), metavar: str | None = None,
        choices: tuple[str, ...] | None = None, cli: bool = True, required: bool = False,
        minimum: int | None = None, default_factory: Any = None) -> Any:
    """A request field with what the CLI needs to show it; ``minimum`` is the smallest number
    the field takes (checked by the request itself and by the CLI's option)."""
    metadata = {"help": help, "flags": flags, "metavar": metavar, "choices": choices, "cli": cli, "required": required,
                "minimum": minimum}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


FEATURE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class RequestError(ValueError):
    """A request whose fields contradict each other, name nothing known or are out of range."""


_DEVICE = re.compile(r"auto|cpu|mps|(cuda|xpu)(:\d+)?")


def check_device(device: str) -> str:
    """``device`` if it names a device torch can use (checked without importing torch)."""
    if not _DEVICE.fullmatch(str(device)):
        raise RequestError(f"device must be auto, cpu, cuda or cuda:N (or mps, xpu), got {device!r}")
    return device


def _check_declared(request: Any) -> None:
    """The ``minimum`` and ``choices`` its fields declare (the CLI checks them too, as it parses)."""
    for f in dataclasses.fields(request):
        value, minimum, choices = getattr(request, f.name), f.metadata.get("minimum"), f.metadata.get("choices")
        if minimum is not None and isinstance(value, (int, float)) and value < minimum:
            raise RequestError(f"{f.name} must be at least {minimum}, got {value}")
        if choices and value is not None and value not in choices:
            raise RequestError(f"{f.name} must be one of {', '.join(choices)}, got {value!r}")


@dataclass(frozen=True)
class ExtractRequest:
    """Extract one model's features for one dataset into the store."""

    model: str = arg(help="Extractor name (`iqa-store models` lists them).", flags=("-m",), required=True)
    dataset: str = arg(help="Dataset adapter: demo, koniq, csv, ...", flags=("-d",), required=True)
    # the CLI's --root and -o are shared by every command that reads a dataset (cli.options.dataset_options)
    root: str | None = arg(help="Dataset root folder (or the dataset's environment variable).", cli=False)
    dataset_options: Mapping[str, Any] = arg(help="Dataset adapter options, e.g. labels=scores.csv for csv.",
                                             cli=False, default_factory=dict)
    weights: str | None = arg(help="registry:NAME[/FINGERPRINT] (an encoder of the store), a checkpoint file "
                                   "(safetensors or a tensor-only torch file) or a transformers save_pretrained "
                                   "folder [default: the model's published weights].")
    settings: Mapping[str, Any] = arg(help="Any other extractor setting, e.g. -s normalize=true "
                                           "(iqa-store models --format json lists them).",
                                      flags=("--set", "-s"), metavar="KEY=VALUE", default_factory=dict)
    policy: str | None = arg(help="Preprocessing of neural models: default (the model's resize + centre crop), full "
                                  "(native resolution), multicrop:N (mean of N crops) or twoscale (full + half scale).")
    precision: str | None = arg(help="[default: bf16 on CUDA, fp32 on CPU]", choices=("fp32", "bf16", "fp16"))
    random_init: bool = arg(False, "Random weights. For tests only: the features mean nothing.")
    name: str | None = arg(help="Store the features under this name [default: the model's], so variants of one "
                                "model (an ablation's encoder, other settings) are told apart: fit -f NAME.",
                           metavar="NAME")
    protocol: str | None = arg(help="A model trained per split (cnniqa): extract one feature set per split of this "
                                    "protocol, each with the encoder trained on that split's training rows.")
    splits: int = arg(10, "With --protocol: the number of splits (as given to train and fit).", minimum=1)
    split_seed: int = arg(0, "With --protocol: the splits' seed (fit's --seed).")
    # run-time knobs: they never change the stored numbers
    device: str = arg("auto", "auto, cpu, cuda or cuda:N.")
    batch_size: int = arg(32, "Images per forward pass.", minimum=1)
    workers: int | None = arg(help="DataLoader decoding processes [default: min(4, cores)].", minimum=0)
    shard: str | None = arg(help="Compute only shard I of N (the row chunks k with k % N == I); run N such processes "
                                 "(one per GPU or machine, sharing the store); the last one to finish completes the set.",
                            metavar="I/N")
    scheduler: str | None = arg(help="Run the shards as tasks on an existing Dask cluster, e.g. tcp://10.0.0.5:8786 "
                                     "(workers share the store's filesystem; the device is chosen on each worker).",
                                metavar="ADDRESS")
    shards: int | None = arg(help="With --scheduler: number of shard tasks [default: one per GPU when the workers "
                                  "advertise --resources GPU=1, else one per worker].", minimum=1)

    def __post_init__(self) -> None:
        _check_declared(self)
        check_device(self.device)
        if self.name is not None and not FEATURE_NAME.fullmatch(self.name):
            raise RequestError(f"feature name {self.name!r}: letters, digits, '.', '_' and '-', starting with a "
                               "letter or digit ('+' joins features in a combination, '@' and '/' name sets)")

    def extractor_settings(self) -> dict[str, Any]:
        """The extractor fields this request sets (``--set`` and ``--policy``)."""
        return {**dict(self.settings), **({"policy": self.policy} if self.policy else {})}

    def with_absolute_paths(self) -> "ExtractRequest":
        """Paths as the workers of a cluster must see them: absolute (on the shared filesystem)."""
        weights = self.weights
        if weights and not weights.startswith("registry:"):
            weights = _absolute(weights)
        return dataclasses.replace(self, root=_absolute(self.root), weights=weights)


@dataclass(frozen=True)
class FitRequest:
    """Fit regressors on stored features against MOS, over combinations and splits."""

    features: tuple[str, ...] = arg(help="A combination such as clip+brisque; repeat for more.", flags=("-f",),
                                    default_factory=tuple)
    all_combos: tuple[str, ...] | None = arg(help="Every non-empty subset of a comma list, e.g. clip,brisque,reiqa.")
    max_size: int | None = arg(help="Largest subset size for --all-combos.", minimum=1)
    cross: tuple[str, ...] | None = arg(help="First group of a cross product, e.g. clip,align,altclip,hps.")
    with_: tuple[str, ...] | None = arg(help="Second group of the cross product, e.g. brisque,cnniqa,metaiqa.")
    datasets: tuple[str, ...] | None = arg(help="Only these datasets [default: every dataset that has all features].",
                                           flags=("--dataset", "-d"))
    protocol: str = arg("random-80-20", "random-80-20, random-70-10-20, official, scenes-4-2 (CID2013) or zero-shot "
                                        "(a score feature, no fitting); grouped by reference image on synthetic "
                                        "datasets.", flags=("-p",))
    splits: int = arg(10, "Number of random splits.", minimum=1)
    seed: int = arg(0, "Seed of the splits.")
    regressors: tuple[str, ...] = arg(help="ridge, linear or mlp; repeat for several.", flags=("--regressor", "-r"),
                                      default_factory=lambda: ("ridge",))
    train: str | None = arg(help="Cross-dataset: fit on all of this dataset (with --test).")
    test: str | None = arg(help="Cross-dataset: test on all of this dataset (with --train).")
    plot_dir: str | None = arg(help="Write predicted-vs-MOS scatter plots here.", flags=("--plot",))
    # run-time knobs: where the cells are fitted
    workers: int | None = arg(help="Fit on a Dask LocalCluster of N worker processes (BLAS threads: cores // N each).")
    scheduler: str | None = arg(help="Fit on an existing Dask cluster, e.g. tcp://10.0.0.5:8786.")

    def __post_init__(self) -> None:
        _check_declared(self)

    @property
    def cross_dataset(self) -> bool:
        return bool(self.train or self.test)


def _absolute(path: str | None) -> str | None:
    return str(Path(path).expanduser().absolute()) if path else None


_ALIASES = {"with": "with_", "plot": "plot_dir"}  # the flag names users know from the CLI


def request_from_mapping(kind: type, data: Mapping[str, Any], where: str) -> Any:
    """A request from YAML-style data (the CLI's names ``with``, ``plot`` allowed; lists for tuples),
    every value checked against its field's type; clear errors naming ``where``."""
    if not isinstance(data, Mapping):
        raise RequestError(f"{where}: must be a mapping of keys to values, got {type(data).__name__}")
    names = {f.name: f for f in dataclasses.fields(kind)}
    values: dict[str, Any] = {}
    for key, value in data.items():
        name = _ALIASES.get(key, str(key).replace("-", "_"))
        if name not in names:
            raise RequestError(f"{where}: unknown key {key!r}; known: {', '.join(sorted(names))}")
        values[name] = value
    try:
        return kind(**checked_options(kind, values, where, RequestError))
    except RequestError as error:
        raise RequestError(str(error) if str(error).startswith(where) else f"{where}: {error}") from None
