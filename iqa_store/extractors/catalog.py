"""What ``iqa-store models`` shows: every registered extractor, built with its defaults.

Building an extractor reads configs only (no weights are loaded or downloaded), so the listing
is cheap and works offline; ``weights_present`` says whether extraction could start right now.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from iqa_store.extractors import EXTRACTORS


def describe_models() -> list[dict[str, Any]]:
    rows = [_describe(name) for name in EXTRACTORS.names()]
    rows += [{"name": f"{prefix}:...", "help": EXTRACTORS.prefix_help(prefix), "dim": None, "source": "",
              "licence": "", "weights_present": None, "settings": {}} for prefix in EXTRACTORS.prefixes()]
    return rows


def _describe(name: str) -> dict[str, Any]:
    extractor = EXTRACTORS.get(name)()
    return {"name": name, "help": EXTRACTORS.help(name), "dim": _dim(extractor), "source": extractor.weights_source(),
            "licence": extractor.licence, "weights_present": extractor.weights_available(),
            "settings": {f.name: getattr(extractor, f.name) for f in dataclasses.fields(extractor)
                         if f.init and f.name not in ("name", "store")}}


def _dim(extractor: Any) -> int | None:
    try:
        return int(extractor.dim)
    except Exception:  # a config that is only in the weights' folder: fall back to the published size
        return getattr(extractor, "published_dim", None)
