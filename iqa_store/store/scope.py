"""Split scope: which rows of which dataset a learned feature was trained on.

An encoder or feature set learned from MOS is only honest on rows it never saw. Its scope
names the stored split set (dataset, protocol, splits key) and the split whose training part
it learned from; ``None`` means unscoped (self-supervised, or published weights): usable
everywhere. A fit uses a scoped feature on exactly the split of its scope and refuses any
other, so a split's test rows are never scored by a model trained on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Scope", "scope_from_dict"]


@dataclass(frozen=True)
class Scope:
    dataset: str
    protocol: str  # the protocol's name, for messages; the key identifies the split set
    splits_key: str
    split: int

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "protocol": self.protocol, "splits_key": self.splits_key, "split": self.split}

    def describe(self) -> str:
        return f"split {self.split} of {self.protocol} on {self.dataset} (splits {self.splits_key})"

    def same_split_set(self, other: "Scope") -> bool:
        return (self.dataset, self.splits_key) == (other.dataset, other.splits_key)


def scope_from_dict(data: dict[str, Any] | None) -> Scope | None:
    """The scope stored with an encoder or a feature set; None for unscoped ones."""
    if not data:
        return None
    return Scope(str(data["dataset"]), str(data["protocol"]), str(data["splits_key"]), int(data["split"]))
