"""Image towers of Hugging Face ``transformers`` dual encoders (ALIGN, AltCLIP).

Stored vector: ``model.get_image_features(pixel_values=...).pooler_output`` of the whole
transformers model, NOT L2-normalised unless ``normalize=True``. The whole model is loaded
(through transformers' own ``from_pretrained``, so its checkpoint key conversions apply) and
its text tower is then dropped: loading the vision tower alone is not clean, because
transformers 5 renames keys on save and load (AltCLIP's ``save_pretrained`` writes the vision
encoder's ``layers.N`` as ``layer.N`` and only the full model's load mapping renames them back).

Weights, in order:

* ``weights`` = a folder written by ``save_pretrained``: ``config.json`` plus
  ``model.safetensors`` (or ``pytorch_model.bin``, or a sharded ``*.index.json`` with its shards);
* ``weights`` = one file holding the whole model's state dict (safetensors, or a torch file read
  with ``weights_only=True``, never unpickled); the architecture comes from ``config.json`` next
  to the file, else from the Hugging Face cache of ``repo``;
* else the hub repository ``repo`` through the Hugging Face cache (HF_HOME / HF_HUB_CACHE): looked
  up locally first, downloaded only when absent and HF_HUB_OFFLINE is not set, pinned to the
  commit whose ``config.json`` was found; missing offline is a clear error naming what to get.

``random_init`` (tests only) builds the architecture of that same config with random weights.

Preprocessing ``default`` is the model's own image processor (the torchvision backend that
``AutoImageProcessor`` picks), built from the values published in the repository's
``preprocessor_config.json``, recorded here as data; a ``preprocessor_config.json`` next to the
weights (folder or file) or in the hub cache overrides them. The other policies normalise with
the mean/std on [0, 1] values that the processor's rescale + normalise amount to.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from iqa_store.extractors.base import ExtractorError
from iqa_store.extractors.embedder import ImageEmbedder, TensorRecipe
from iqa_store.extractors.neural import cached_sha256, load_state_dict

if TYPE_CHECKING:
    import torch

CONFIG_FILE = "config.json"
PROCESSOR_FILE = "preprocessor_config.json"
# What save_pretrained / the hub hold, in order of preference (safetensors first).
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json",
                "pytorch_model.bin", "pytorch_model.bin.index.json")
# Buffers that older transformers saved and newer ones rebuild: never a reason to refuse a file.
_REBUILT_BUFFERS = ("position_ids", "token_type_ids")


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as set now (huggingface_hub reads it once, at import)."""
    value = os.environ.get("HF_HUB_OFFLINE")
    if value is not None:
        return value.strip().lower() in ("1", "true", "yes", "on")
    from huggingface_hub import constants
    return bool(constants.HF_HUB_OFFLINE)


@dataclass
class HfDualEncoder(ImageEmbedder):
    """A transformers dual encoder's image embedding; subclasses name the classes and recorded values."""

    repo: str = ""
    # --- what a subclass supplies ------------------------------------------------------------
    model_type: ClassVar[str]  # config.json "model_type", e.g. "align"
    model_class: ClassVar[str]  # transformers class of the whole model, e.g. "AlignModel"
    config_class: ClassVar[str]  # e.g. "AlignConfig"
    processor_class: ClassVar[str]  # e.g. "EfficientNetImageProcessor"
    processor_defaults: ClassVar[dict[str, Any]]  # the published preprocessor_config.json values
    image_prefixes: ClassVar[tuple[str, ...]]  # state-dict prefixes of what get_image_features uses
    published_dim: ClassVar[int]  # for listings when no config is on this machine
    weights_note: ClassVar[str] = ""
    _processor_values: dict[str, Any] | None = field(default=None, init=False, repr=False, compare=False)
    _transform: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.weights is not None:
            resolved = Path(self.weights).expanduser().resolve()
            if not resolved.exists():
                raise ExtractorError(f"--weights not found: {resolved}")
            self.weights = str(resolved)

    @classmethod
    def dim_of(cls, config: Any) -> int:
        """The image embedding's dimension for a transformers config of this model."""
        raise NotImplementedError

    def image_kwargs(self) -> dict[str, Any]:
        """Extra keyword arguments of ``get_image_features`` (e.g. position interpolation)."""
        return {}

    # --- config and dimension ----------------------------------------------------------------
    @property
    def embedding_dim(self) -> int:
        return self.dim_of(self.config())

    def config(self) -> Any:
        """The transformers config (read from disk, never downloaded)."""
        path = self._config_file(fetch=False)
        if path is None:
            raise ExtractorError(self._no_config_message())
        return self._read_config(path)

    def _read_config(self, path: str) -> Any:
        import transformers
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as error:
            raise ExtractorError(f"cannot read {path}: {error}") from error
        if data.get("model_type") != self.model_type:
            raise ExtractorError(f"{path} is a {data.get('model_type')!r} config, not {self.model_type!r}: "
                                 f"{self.name} needs the config of a {self.model_class}")
        return getattr(transformers, self.config_class).from_dict(data)

    def _no_config_message(self) -> str:
        if self.weights and Path(self.weights).is_dir():
            return f"{self.weights} has no {CONFIG_FILE}: --weights DIR must be a folder written by save_pretrained"
        where = f"next to {self.weights} nor " if self.weights else ""
        fix = f"put the model's {CONFIG_FILE} next to the weights file" if self.weights else f"`hf download {self.repo}`"
        return (f"no {CONFIG_FILE} for {self.name} {where}in the Hugging Face cache for {self.repo}: {fix}, or pass "
                f"--weights DIR (a save_pretrained folder); published dimension {self.published_dim}")

    # --- files -------------------------------------------------------------------------------
    def _beside(self, name: str) -> str | None:
        """``name`` in the --weights folder, or next to the --weights file."""
        if not self.weights:
            return None
        folder = Path(self.weights)
        path = (folder if folder.is_dir() else folder.parent) / name
        return str(path) if path.is_file() else None

    def _config_file(self, fetch: bool) -> str | None:
        found = self._beside(CONFIG_FILE)
        if found or (self.weights and Path(self.weights).is_dir()):
            return found
        if self.weights:  # a weights file without its config: the repository's, when it can be had
            try:
                return self._hub_file(CONFIG_FILE, fetch=fetch and not hub_offline())
            except ExtractorError:
                return None
        return self._hub_file(CONFIG_FILE, fetch=fetch)

    def _processor_file(self) -> str | None:
        found = self._beside(PROCESSOR_FILE)
        if found or self.weights:
            return found
        return self._hub_file(PROCESSOR_FILE, fetch=False)

    def _hub_file(self, filename: str, revision: str | None = None, fetch: bool = False) -> str | None:
        """A file of ``repo`` from the Hugging Face cache; downloaded when ``fetch`` and online.
        None when it is not there (or the repository has no such file)."""
        from huggingface_hub import try_to_load_from_cache
        found = try_to_load_from_cache(self.repo, filename, revision=revision)
        if isinstance(found, str):
            return found
        if not fetch:
            return None
        if hub_offline():
            raise ExtractorError(self._missing_message("HF_HUB_OFFLINE is set"))
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError
        try:
            return hf_hub_download(self.repo, filename, revision=revision)
        except EntryNotFoundError:
            return None
        except Exception as error:  # network, authentication (gated repositories), ...: the message says what to do
            why = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
            raise ExtractorError(self._missing_message(why)) from error

    def _hub_commit(self, fetch: bool) -> str | None:
        """The commit of ``repo`` whose config.json is in the cache (fetched first when asked)."""
        path = self._hub_file(CONFIG_FILE, fetch=fetch)
        return Path(path).parent.name if path else None

    def _missing_message(self, why: str) -> str:
        return (f"weights for {self.name} are not in the local Hugging Face cache and could not be downloaded ({why}): "
                f"{self.repo} ({CONFIG_FILE} and {WEIGHT_FILES[0]} or {WEIGHT_FILES[2]}). Download them on a machine "
                f"with internet (`hf download {self.repo}`; they go to the Hugging Face cache, HF_HOME)"
                f"{self.weights_note}, or pass --weights DIR (a save_pretrained folder) or --weights FILE "
                f"(the model's state dict, {CONFIG_FILE} next to it).")

    def weight_files(self, fetch: bool = True) -> list[str]:
        """The checkpoint file(s) holding the whole model's state dict."""
        if self.weights and Path(self.weights).is_file():
            return [self.weights]
        if self.weights:
            folder = Path(self.weights)
            for name in WEIGHT_FILES:
                if (folder / name).is_file():
                    if name.endswith(".index.json"):
                        return [str(folder / shard) for shard in _shards(folder / name)]
                    return [str(folder / name)]
            raise ExtractorError(f"{folder} holds none of {', '.join(WEIGHT_FILES)}: --weights DIR must be a "
                                 f"folder written by save_pretrained")
        commit = self._hub_commit(fetch=fetch)
        if commit is None:
            raise ExtractorError(self._missing_message("not in the cache"))
        for attempt_fetch in (False, True) if fetch else (False,):  # what is cached first; then download
            for name in WEIGHT_FILES:
                path = self._hub_file(name, revision=commit, fetch=attempt_fetch)
                if path is None:
                    continue
                if not name.endswith(".index.json"):
                    return [path]
                shards = [self._hub_file(shard, revision=commit, fetch=attempt_fetch) for shard in _shards(Path(path))]
                if all(shards):
                    return [str(s) for s in shards]
        raise ExtractorError(self._missing_message(f"{self.repo} has none of them" if fetch else "not in the cache"))

    # --- identity and listing ----------------------------------------------------------------
    def weights_identity(self) -> dict[str, Any]:
        if not self.random_init and not self.weights:
            return self.published_identity()
        config = self._config_file(fetch=True)
        if config is None:
            raise ExtractorError(self._no_config_message())
        identity: dict[str, Any] = {"config_sha256": cached_sha256(config)}
        if self.random_init:
            return {"random_init": True, "seed": self.seed, **identity}
        if Path(self.weights).is_file():
            return {"file": Path(self.weights).name, "sha256": cached_sha256(self.weights), **identity}
        files = self.weight_files(fetch=False)
        return {"dir": Path(self.weights).name, "files": {Path(f).name: cached_sha256(f) for f in files}, **identity}

    def published_identity(self) -> dict[str, Any]:
        """The hub repository and the commit of the cached (or just fetched) config.json."""
        commit = self._hub_commit(fetch=True)
        if commit is None:
            raise ExtractorError(self._missing_message("not in the cache"))
        return {"hf_hub": self.repo, "commit": commit}

    def weights_source(self) -> str:
        return f"Hugging Face {self.repo}"

    def weights_available(self) -> bool:
        """True when extraction can start without downloading anything."""
        if self._config_file(fetch=False) is None:
            return False
        if self.random_init:
            return True
        try:
            self.weight_files(fetch=False)
        except ExtractorError:
            return False
        return True

    # --- preprocessing -----------------------------------------------------------------------
    def processor_values(self) -> dict[str, Any]:
        """The recorded processor values, overridden by a preprocessor_config.json found locally."""
        if self._processor_values is None:
            values = json.loads(json.dumps(self.processor_defaults))
            path = self._processor_file()
            if path:
                try:
                    found = json.loads(Path(path).read_text())
                except (OSError, ValueError) as error:
                    raise ExtractorError(f"cannot read {path}: {error}") from error
                values.update({k: found[k] for k in values if k in found})
            self._processor_values = values
        return self._processor_values

    def default_transform(self) -> Callable[[Any], "torch.Tensor"]:
        if self._transform is None:
            import transformers
            processor = getattr(transformers, self.processor_class).from_dict(self.processor_values())

            def transform(image: Any) -> "torch.Tensor":
                return processor(images=image, return_tensors="pt").pixel_values[0]
            self._transform = transform
        return self._transform

    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Mean and std on [0, 1] values equivalent to the processor's rescale (+ offset) and normalise."""
        v = self.processor_values()
        scale = 255.0 * (float(v["rescale_factor"]) if v.get("do_rescale", True) else 1.0)
        mean, std = [], []
        for channel in range(3):
            a, b = scale, (-1.0 if v.get("do_rescale", True) and v.get("rescale_offset", False) else 0.0)
            if v.get("do_normalize", True):
                m, s = _channel(v["image_mean"], channel), _channel(v["image_std"], channel)
                a, b = a / s, (b - m) / s
            if v.get("include_top", False):  # EfficientNet's extra division by the std
                s = _channel(v["image_std"], channel)
                a, b = a / s, b / s
            mean.append(-b / a)
            std.append(1.0 / a)
        return tuple(mean), tuple(std)

    def input_size(self) -> int:
        v = self.processor_values()
        return _side(v["crop_size"] if v.get("do_center_crop", True) else v["size"])

    def tensor_recipe(self) -> "TensorRecipe":
        v = self.processor_values()
        interpolation = {2: "bilinear", 3: "bicubic"}.get(v.get("resample"))
        if not v.get("do_resize", True) or interpolation is None:
            return super().tensor_recipe()
        mode = "shortest" if isinstance(v["size"], dict) and "shortest_edge" in v["size"] else "squash"
        mean, std = self.normalization()
        return TensorRecipe(mode, _side(v["size"]), self.input_size(), interpolation, mean, std)

    def resize_target(self) -> int:
        v = self.processor_values()
        return _side(v["size"]) if v.get("do_resize", True) else self.input_size()

    def preprocess_config(self) -> dict[str, Any]:
        config = super().preprocess_config()
        if self.policy == "default":
            config["processor"] = {"class": self.processor_class, **self.processor_values()}
        return config

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_transform"] = None  # rebuilt in each decoding worker
        return state

    # --- the network -------------------------------------------------------------------------
    def load_model(self, device: str) -> Any:
        import torch
        import transformers
        config = self.config()
        model_class = getattr(transformers, self.model_class)
        if self.random_init:
            torch.manual_seed(self.seed)
            model = model_class(config)
        else:
            files = self.weight_files(fetch=True)
            state: dict[str, Any] = {}
            for path in files:
                state.update(load_state_dict(path))
            source = files[0] if len(files) == 1 else str(Path(files[0]).parent)
            model = self._from_state_dict(model_class, config, state, source)
        model.text_model = None  # get_image_features never uses it
        return model.eval().to(device)

    def _from_state_dict(self, model_class: Any, config: Any, state: dict[str, Any], source: str) -> Any:
        import torch
        from transformers.utils import logging as hf_logging
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the load report is turned into one error message below
        try:
            model, info = model_class.from_pretrained(None, config=config, state_dict=state, dtype=torch.float32,
                                                      output_loading_info=True, ignore_mismatched_sizes=True)
        except Exception as error:  # transformers raises several types for state dicts it cannot place
            raise ExtractorError(f"{source} does not fit {self.model_class}: {type(error).__name__}: "
                                 f"{str(error).splitlines()[0][:300]}") from error
        finally:
            hf_logging.set_verbosity(verbosity)
        missing = [k for k in info["missing_keys"] if k.startswith(self.image_prefixes)]
        unexpected = [k for k in info["unexpected_keys"]
                      if k.startswith(self.image_prefixes) and not k.endswith(_REBUILT_BUFFERS)]
        mismatched = [str(m) for m in info["mismatched_keys"]]
        if missing or unexpected or mismatched:
            raise ExtractorError(f"{source} does not fit {self.model_class} as configured ({self.model_type}): "
                                 f"missing image keys {sorted(missing)[:5]} ({len(missing)}), unexpected image keys "
                                 f"{sorted(unexpected)[:5]} ({len(unexpected)}), wrong shapes {mismatched[:3]}")
        return model

    def embed(self, pixels: "torch.Tensor") -> "torch.Tensor":
        return self._model.get_image_features(pixel_values=pixels, **self.image_kwargs()).pooler_output


def _shards(index: Path) -> list[str]:
    """The shard files named by a ``*.index.json`` (each once, in order)."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, ValueError, KeyError) as error:
        raise ExtractorError(f"cannot read the shard index {index}: {error}") from error
    return list(dict.fromkeys(weight_map.values()))


def _channel(value: Any, channel: int) -> float:
    return float(value[channel] if isinstance(value, (list, tuple)) else value)


def _side(size: Any) -> int:
    """The square side of a processor size: an int, {"height", "width"} or {"shortest_edge"}."""
    if isinstance(size, dict):
        return int(size.get("height") or size.get("shortest_edge"))
    return int(size)
