"""What the vision-language image embedders share: preprocessing policies and the forward pass.

A policy decides what the network sees; it is a setting, so part of the fingerprint:

* ``default``: the model's own recipe (its library's eval transform: resize + centre crop).
* ``full``: the whole image at native resolution, values normalised as the model expects. Vision
  transformers get their positional embedding resampled to the image's patch grid (bicubic, as
  timm's ``resample_abs_pos_embed``); CLIP ResNets' attention pooling runs without its positional
  embedding, as CLIP-IQA and QualiCLIP do. Images keep their sizes, so a batch is run as one
  forward pass per distinct size.
* ``multicrop:N``: the mean embedding of N crops of the model's input size, taken at native
  resolution at fixed positions on an evenly spaced grid (``crop_boxes``); images smaller than
  a crop are first enlarged (bicubic) until their short side fits.
* ``twoscale``: ``full`` at full and at half scale (Pillow bicubic to (w // 2, h // 2)),
  concatenated, as Re-IQA and CONTRIQUE do: twice the dimension.

``jpeg_draft`` (``default`` policy only) decodes JPEGs at the smallest DCT scale that still
covers the model's resize target (Pillow's ``draft``): 1024x768 KonIQ images decode at 512x384
for a 224 px model, several times cheaper, then the model's own transform runs as usual. The
pixels differ slightly from a full decode, so it is a setting (in the fingerprint).

``device_decode`` (``default`` policy only): JPEG decoding, resizing and cropping on the model's
device (nvJPEG through ``torchvision.io.decode_jpeg`` on CUDA): the DataLoader workers only read
the files' bytes, so many CPU cores are not needed to feed a fast GPU. The model's default
transform is then run as tensor operations (``TensorRecipe``: antialiased resize, centre crop,
normalisation), within a grey level or so of the Pillow path, so it is a setting (fingerprint).
Files that are not complete JPEGs (no end-of-image marker, other formats) are decoded by Pillow
in the worker as usual; a JPEG the device decoder rejects is decoded by Pillow on the CPU.

``normalize`` L2-normalises each embedding the network returns (each crop, each scale) before
they are averaged or concatenated.

A subclass supplies the model: ``load_model``, ``embed`` (pixels -> embedding),
``default_transform``, ``normalization`` (mean, std on [0, 1] values), ``input_size`` and, when
the network needs adapting to other sizes, ``native_resolution``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from abc import abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Sequence

import numpy as np
from PIL import Image

from iqa_store.extractors.base import Extractor, ExtractorError, RunOptions
from iqa_store.images import ImageReadError, read_rgb
from iqa_store.extractors.neural import autocast, check_precision

if TYPE_CHECKING:
    import torch

POLICIES = ("default", "full", "multicrop:N", "twoscale")


@dataclass(frozen=True)
class Policy:
    kind: str  # default, full, multicrop or twoscale
    crops: int = 1

    @classmethod
    def parse(cls, text: str) -> "Policy":
        kind, _, count = text.partition(":")
        if kind == "multicrop":
            if not count.isdigit() or int(count) < 1:
                raise ExtractorError(f"policy {text!r}: multicrop needs a crop count >= 1, e.g. multicrop:5")
            return cls(kind, int(count))
        if kind in ("default", "full", "twoscale") and not count:
            return cls(kind)
        raise ExtractorError(f"unknown preprocessing policy {text!r}; choose one of {', '.join(POLICIES)}")

    @property
    def views(self) -> int:
        """How many embeddings are concatenated into the stored vector."""
        return 2 if self.kind == "twoscale" else 1


@dataclass(frozen=True)
class TensorRecipe:
    """A model's default transform as tensor operations (for ``device_decode``)."""

    resize: str  # "shortest": short side to ``size``, aspect kept; "squash": size x size
    size: int
    crop: int
    interpolation: str  # "bicubic" or "bilinear"
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, pixels: "torch.Tensor") -> "torch.Tensor":
        """uint8 [3, H, W] on any device -> the normalised [3, crop, crop] float input."""
        import torch
        from torchvision.transforms.v2 import functional as F
        image = pixels.float() / 255
        image = F.resize(image, [self.size] if self.resize == "shortest" else [self.size, self.size],
                         interpolation=F.InterpolationMode(self.interpolation), antialias=True)
        image = F.center_crop(image, [self.crop, self.crop]).clamp_(0, 1)  # Pillow saturates at 0 and 255 too
        mean = torch.tensor(self.mean, device=image.device).view(-1, 1, 1)
        std = torch.tensor(self.std, device=image.device).view(-1, 1, 1)
        return (image - mean) / std


def pixels_to_input(image: Image.Image, mean: Sequence[float] | None = None,
                    std: Sequence[float] | None = None) -> "torch.Tensor":
    """An RGB image as a float [3, H, W] tensor of [0, 1] values, normalised with mean/std if given."""
    import torch
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    if mean is None or std is None:
        return pixels
    return (pixels - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)


def half_scale(image: Image.Image, path: Any) -> Image.Image:
    """Pillow bicubic to (w // 2, h // 2), as the Re-IQA reference extraction does."""
    width, height = image.size
    if min(width, height) < 2:
        raise ImageReadError(f"{path} is {width}x{height} px: too small for a half-scale copy")
    return image.resize((width // 2, height // 2), Image.Resampling.BICUBIC)


def crop_boxes(width: int, height: int, size: int, count: int) -> list[tuple[int, int]]:
    """Top-left corners of ``count`` size x size crops: the smallest rows x cols grid with the
    image's aspect ratio that holds them, spread evenly from edge to edge (centred when one
    per axis), ``count`` cells taken evenly along the grid's raster order."""
    cols = max(1, min(count, round(math.sqrt(count * width / height))))
    rows = math.ceil(count / cols)
    xs = _spread(width - size, cols)
    ys = _spread(height - size, rows)
    cells = [(x, y) for y in ys for x in xs]
    picks = np.linspace(0, len(cells) - 1, count).round().astype(int)
    return [cells[i] for i in picks]


def _spread(room: int, count: int) -> list[int]:
    if count == 1:
        return [room // 2]
    return [int(v) for v in np.linspace(0, room, count).round()]


@dataclass
class ImageEmbedder(Extractor):
    """Base of the vision-language image embedders (open_clip, transformers)."""

    weights: str | None = None
    random_init: bool = False
    seed: int = 0  # only used with random_init
    normalize: bool = False
    policy: str = "default"
    jpeg_draft: bool = False
    device_decode: bool = False
    precision: str = "fp32"  # fp32, bf16 or fp16 (autocast; CUDA only)
    channels_last: ClassVar[bool] = False  # convolutional networks run faster in NHWC on GPUs
    _model: Any = field(default=None, init=False, repr=False, compare=False)
    _device: str = field(default="cpu", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_precision(self.precision)
        self._policy = Policy.parse(self.policy)
        if self.jpeg_draft and self._policy.kind != "default":
            raise ExtractorError(f"jpeg_draft lowers the decoded resolution: it goes with the default policy, "
                                 f"not {self.policy!r}")
        if self.device_decode and (self._policy.kind != "default" or self.jpeg_draft):
            raise ExtractorError("device_decode runs the default policy's transform on the device: it goes with "
                                 f"the default policy and without jpeg_draft (policy {self.policy!r})")

    # --- what the subclass supplies ----------------------------------------------------------
    @property
    @abstractmethod
    def embedding_dim(self) -> int:
        """Dimension of one embedding (one view)."""

    @abstractmethod
    def default_transform(self) -> Callable[[Image.Image], "torch.Tensor"]:
        """The model's own eval preprocessing, PIL image -> [C, H, W] tensor."""

    @abstractmethod
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Mean and std applied to [0, 1] pixel values by the other policies."""

    @abstractmethod
    def input_size(self) -> int:
        """The square input side the model was trained at (crop size of ``multicrop``)."""

    def resize_target(self) -> int:
        """The side the default transform resizes to before cropping (``jpeg_draft`` keeps it)."""
        return self.input_size()

    @abstractmethod
    def load_model(self, device: str) -> Any:
        """The network in eval mode on ``device`` (main process only)."""

    @abstractmethod
    def embed(self, pixels: "torch.Tensor") -> "torch.Tensor":
        """The stored embedding of a batch of preprocessed images, [B, embedding_dim]."""

    def tensor_recipe(self) -> TensorRecipe:
        """The default transform as tensor operations (``device_decode``)."""
        raise ExtractorError(f"{self.name} cannot decode on the device (no tensor recipe for its preprocessing)")

    def native_resolution(self, height: int, width: int) -> contextlib.AbstractContextManager:
        """Adapts the network to height x width inputs while the context is open."""
        return contextlib.nullcontext()

    def smallest_side(self) -> int:
        """The smallest image side the network accepts at native resolution (a ViT's patch)."""
        return 1

    def preprocess_config(self) -> dict[str, Any]:
        """What decides the pixels the network sees (part of ``settings``)."""
        mean, std = self.normalization()
        config = {"policy": self.policy, "input_size": self.input_size(), "mean": list(mean), "std": list(std)}
        if self.jpeg_draft:
            config["jpeg_draft"] = self.resize_target()
        if self.device_decode:
            config["device_decode"] = dataclasses.asdict(self.tensor_recipe())
        return config

    # --- the contract ------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.embedding_dim * self._policy.views

    def settings(self) -> dict[str, Any]:
        return {"normalize": self.normalize, "precision": self.precision, "preprocess": self.preprocess_config()}

    def prepare(self, options: RunOptions) -> None:
        import torch
        self._device = options.device
        model = self.load_model(options.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self._model = model

    def __getstate__(self) -> dict[str, Any]:
        # Decoding workers get the settings, never the model.
        state = dict(self.__dict__)
        state["_model"] = None
        return state

    def load_item(self, path: Any) -> Any:
        if self.device_decode:
            return _jpeg_bytes_or_pixels(path)
        image = read_rgb(path, self.resize_target() if self.jpeg_draft else None)
        kind = self._policy.kind
        if kind == "default":
            return self.default_transform()(image)
        if kind == "full":
            return self._native(image, path)
        if kind == "twoscale":
            return self._native(image, path), self._native(half_scale(image, path), path)
        return self._crops(image)

    def collate(self, items: Sequence[Any]) -> Any:
        import torch
        if self._policy.kind in ("default", "multicrop") and not self.device_decode:
            return torch.stack(list(items))
        return list(items)

    def compute(self, batch: Any) -> np.ndarray:
        import torch
        kind = self._policy.kind
        if self.device_decode:
            out = self._forward_decoded(batch)
        elif kind == "default":
            out = self._forward(batch)
        elif kind == "multicrop":
            crops = self._forward(batch.flatten(0, 1))
            out = crops.view(batch.shape[0], batch.shape[1], -1).mean(dim=1)
        elif kind == "full":
            out = self._forward_by_size(batch)
        else:
            out = torch.cat([self._forward_by_size([pair[0] for pair in batch]),
                             self._forward_by_size([pair[1] for pair in batch])], dim=1)
        return out.cpu().numpy()

    # --- helpers -----------------------------------------------------------------------------
    def _native(self, image: Image.Image, path: Any) -> "torch.Tensor":
        if min(image.size) < self.smallest_side():
            raise ImageReadError(f"{path}: {image.width}x{image.height} px at this scale is smaller than the "
                                 f"{self.smallest_side()} px the network needs at native resolution")
        return self._to_tensor(image)

    def _to_tensor(self, image: Image.Image) -> "torch.Tensor":
        return pixels_to_input(image, *self.normalization())

    def _crops(self, image: Image.Image) -> "torch.Tensor":
        import torch
        size = self.input_size()
        width, height = image.size
        if min(width, height) < size:
            scale = size / min(width, height)
            image = image.resize((max(size, round(width * scale)), max(size, round(height * scale))),
                                 Image.Resampling.BICUBIC)
        pixels = self._to_tensor(image)
        boxes = crop_boxes(image.size[0], image.size[1], size, self._policy.crops)
        return torch.stack([pixels[:, y:y + size, x:x + size] for x, y in boxes])

    def _forward(self, pixels: "torch.Tensor") -> "torch.Tensor":
        import torch
        pixels = pixels.to(self._device, non_blocking=True)
        if self.channels_last:
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast(pixels.device.type, self.precision):
            out = self.embed(pixels)
        out = out.float()
        return torch.nn.functional.normalize(out, dim=-1) if self.normalize else out

    def _forward_decoded(self, items: list["torch.Tensor"]) -> "torch.Tensor":
        """Decodes the JPEG bytes among ``items`` on the device, then the recipe and the model;
        a row the device decoder and Pillow both reject comes out NaN (marked failed)."""
        import torch
        pixels = _decode_on(self._device, items)
        recipe = self.tensor_recipe()
        good = [i for i, p in enumerate(pixels) if p is not None]
        values = self._forward(torch.stack([recipe(pixels[i].to(self._device, non_blocking=True)) for i in good]))
        out = values.new_full((len(items), values.shape[1]), float("nan"))
        out[good] = values
        return out

    def _forward_by_size(self, images: list["torch.Tensor"]) -> "torch.Tensor":
        import torch
        out: "torch.Tensor | None" = None
        for shape, rows in group_by_shape(images):
            with self.native_resolution(shape[-2], shape[-1]):
                values = self._forward(torch.stack([images[i] for i in rows]))
            if out is None:
                out = values.new_empty((len(images), values.shape[1]))
            out[rows] = values
        assert out is not None
        return out


_JPEG_START, _JPEG_END = b"\xff\xd8", b"\xff\xd9"


def _jpeg_bytes_or_pixels(path: Any) -> "torch.Tensor":
    """A complete JPEG's bytes (uint8 [n]) for the device decoder, else Pillow's pixels (uint8 [3, H, W])."""
    import torch
    try:
        data = Path(path).read_bytes()
    except OSError:
        data = b""
    if data.startswith(_JPEG_START) and data.rstrip(b"\x00").endswith(_JPEG_END):
        return torch.frombuffer(bytearray(data), dtype=torch.uint8)
    return torch.from_numpy(np.array(read_rgb(path))).permute(2, 0, 1)  # read_rgb names unreadable files


def _decode_on(device: str, items: list["torch.Tensor"]) -> list["torch.Tensor | None"]:
    from torchvision.io import ImageReadMode, decode_jpeg
    pixels: list[Any] = list(items)
    encoded = [i for i, item in enumerate(items) if item.dim() == 1]
    if not encoded:
        return pixels
    try:
        for i, image in zip(encoded, decode_jpeg([items[i] for i in encoded], mode=ImageReadMode.RGB, device=device)):
            pixels[i] = image
    except RuntimeError:  # one bad file fails the batch: decode one by one, Pillow as the fallback
        for i in encoded:
            pixels[i] = _decode_one(items[i])
    return pixels


def _decode_one(data: "torch.Tensor") -> "torch.Tensor | None":
    import io

    import torch
    try:
        with Image.open(io.BytesIO(data.numpy().tobytes())) as image:
            return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
    except Exception:  # Pillow raises many types for corrupt data; the row is marked failed
        return None


def group_by_shape(images: list["torch.Tensor"]) -> Iterator[tuple[tuple[int, ...], list[int]]]:
    """(shape, row indices) of each distinct image shape: one forward pass per shape."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(tuple(image.shape), []).append(i)
    yield from groups.items()


@contextlib.contextmanager
def swapped_parameter(module: Any, name: str, value: "torch.Tensor") -> Iterator[None]:
    """``module.<name>`` holds ``value`` while the context is open, then its own tensor again."""
    original = getattr(module, name).data
    getattr(module, name).data = value.to(original.device, original.dtype)
    try:
        yield
    finally:
        getattr(module, name).data = original
