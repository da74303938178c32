"""open_clip with the project's extra model-config folders registered (tiny or custom architectures).

``IQA_OPENCLIP_MODEL_CONFIGS`` lists folders of open_clip architecture JSON files (separated by
``os.pathsep``); extractors and training stages both build CLIP models through ``open_clip_module``.
"""

from __future__ import annotations

import os
from typing import Any

CONFIG_DIRS_ENV = "IQA_OPENCLIP_MODEL_CONFIGS"

_REGISTERED_CONFIG_DIRS: set[str] = set()


def open_clip_module() -> Any:
    """open_clip, with the folders of CONFIG_DIRS_ENV registered once per process (each
    ``add_model_config`` call appends the folder and rescans every registered one, and this is
    called per image by the preprocessing)."""
    import open_clip
    for folder in filter(None, os.environ.get(CONFIG_DIRS_ENV, "").split(os.pathsep)):
        if folder not in _REGISTERED_CONFIG_DIRS:
            open_clip.add_model_config(folder)
            _REGISTERED_CONFIG_DIRS.add(folder)
    return open_clip
