"""Content texts: "A photo of a(n) {s}." from a label, else a caption from a pluggable captioner.

Labels come, in this order, from a label file (``read_label_file``: image id or reference image
-> label), from the manifest (``info["content_labels"]``, e.g. the CSV adapter's
``labels_column``) and from the labels the package ships for a dataset's reference images (the
demo's photographs). Images without one are captioned when a captioner is given; SLIQUE used
ClipCap there, we take any ``Captioner`` and ship one over transformers' image-text-to-text
models (BLIP, GIT), loaded by hub name or local folder like every other weight.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

__all__ = ["Captioner", "CaptionerError", "TransformersCaptioner", "caption_text", "read_label_file"]


class CaptionerError(ValueError):
    """A captioner whose weights cannot be had, or a label file that cannot be read."""


@runtime_checkable
class Captioner(Protocol):
    """Anything that writes one caption per RGB image; ``name`` is part of the stored texts' key."""

    name: str

    def caption(self, images: Sequence[np.ndarray]) -> list[str]: ...


def caption_text(caption: str) -> str:
    """A caption as a content text: one line, capitalised, ending with a full stop."""
    text = " ".join(str(caption).split()).rstrip(" .")
    return f"{text[:1].upper()}{text[1:]}." if text else ""


def read_label_file(path: str | Path) -> dict[str, str]:
    """A CSV with a header naming ``image_id`` (or ``reference_id``) and ``label``: key -> label.
    Keys may be image ids or reference images; an image takes its own label before its reference's."""
    from iqa_store.datasets.csv_folder import read_label_csv
    from iqa_store.datasets.manifest import ManifestError
    table = read_label_csv(Path(path).expanduser())
    key = next((name for name in ("image_id", "reference_id") if name in table.columns), None)
    if key is None or "label" not in table.columns:
        raise ManifestError(f"{table.path}: a content label file needs columns image_id (or reference_id) and "
                            f"label; it has {table.columns}")
    labels: dict[str, str] = {}
    for line, row in table.rows:
        name, label = row[key].strip(), " ".join(row["label"].split())
        if not name or not label:
            raise ManifestError(f"{table.where(line)}: empty {key if not name else 'label'}")
        labels[name] = label
    return labels


class TransformersCaptioner:
    """Captions from a transformers image-text-to-text model (``AutoModelForImageTextToText``), e.g.
    ``Salesforce/blip-image-captioning-base`` or a folder written by ``save_pretrained``; greedy
    decoding, so the same image always gets the same caption."""

    def __init__(self, model: str, *, device: str = "cpu", batch_size: int = 8, max_new_tokens: int = 30) -> None:
        self.name, self.device = str(model), device
        self.batch_size, self.max_new_tokens = int(batch_size), int(max_new_tokens)
        self._loaded: tuple[Any, Any] | None = None

    def load(self) -> tuple[Any, Any]:
        """Processor and model, loaded on first use; a ``CaptionerError`` when they cannot be had."""
        if self._loaded is None:
            from transformers import AutoModelForImageTextToText, AutoProcessor
            try:
                processor = AutoProcessor.from_pretrained(self.name)
                model = AutoModelForImageTextToText.from_pretrained(self.name).to(self.device).eval()
            except (OSError, ValueError) as error:  # not cached and offline, no such repo, not a captioner
                why = " ".join(str(error).split()).split(". ")[0][:300]  # the first sentence says what failed
                raise CaptionerError(
                    f"captioner {self.name!r} cannot be loaded ({why}); on a machine with internet run "
                    f"`hf download {self.name}` (it goes to the Hugging Face cache, HF_HOME), or give a folder written "
                    f"by save_pretrained, or switch content texts off") from None
            self._loaded = processor, model
        return self._loaded

    def caption(self, images: Sequence[np.ndarray]) -> list[str]:
        import torch
        processor, model = self.load()
        captions: list[str] = []
        for start in range(0, len(images), self.batch_size):
            batch = [np.array(image) for image in images[start:start + self.batch_size]]  # writable copies for torch
            inputs = processor(images=batch, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                tokens = model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
            captions += processor.batch_decode(tokens, skip_special_tokens=True)
        return captions
