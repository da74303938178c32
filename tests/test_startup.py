"""Commands that do no model work import no model library.

A cached re-run of an extraction, ``ls``, ``show``, ``splits show`` and ``fit`` on stored
features each run in a fresh interpreter on a real store (the demo dataset, BRISQUE extracted
once); after the command, the interpreter reports which of torch, open_clip and transformers
it imported. Importing torch alone costs more than the whole cached command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from iqa_store import api
from iqa_store.store import FeatureStore

# Extracting the demo set and six interpreters take 15-25 s on 2 cores: the slow suite (CI runs it).
pytestmark = pytest.mark.slow

MODEL_LIBRARIES = ("torch", "open_clip", "transformers")

# Runs the CLI's own entry point with the given arguments, then prints, as its last line, the
# model libraries the process imported. standalone_mode=False: an error is a traceback here.
_PROBE = f"""
import json, sys
from iqa_store.cli import cli
cli(args=sys.argv[1:], prog_name="iqa-store", standalone_mode=False)
print(json.dumps(sorted(m for m in {MODEL_LIBRARIES!r} if m in sys.modules)))
"""


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A store with the demo dataset's BRISQUE set, fitted once (so splits are stored)."""
    store = FeatureStore(tmp_path_factory.mktemp("startup") / "store")
    report = api.extract("brisque", "demo", store=store, workers=2, progress=False, log=lambda line: None)
    assert report.status == "complete"
    api.fit(["brisque"], datasets=["demo"], splits=2, store=store, progress=False)
    return store.root, report.feature_set


def run_and_list_model_libraries(store: Path, args: list[str]) -> tuple[str, list[str]]:
    """The command's output, and the model libraries its interpreter had imported at the end."""
    environment = {**{k: v for k, v in os.environ.items() if k != "IQA_STORE"}, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", _PROBE, *args, "--store", str(store)], capture_output=True,
                          text=True, timeout=120, env=environment)
    assert done.returncode == 0, done.stderr
    *output, libraries = done.stdout.strip().splitlines()
    return "\n".join(output), json.loads(libraries)


# Each with a piece of its output, to show it did its work.
@pytest.mark.parametrize("args, says", [
    pytest.param(["extract", "-m", "brisque", "-d", "demo", "-q"], "cached, 240 rows", id="extract-cached"),
    pytest.param(["ls"], "{feature_set}", id="ls"),
    pytest.param(["show", "{feature_set}"], "brisque", id="show"),
    pytest.param(["splits", "show", "demo"], "random-80-20", id="splits-show"),
    pytest.param(["fit", "-f", "brisque", "-d", "demo", "--splits", "3", "-q"], "SRCC", id="fit"),  # 3 new splits
])
def test_command_without_model_work_imports_no_model_library(demo_store: tuple[Path, str], args: list[str],
                                                             says: str) -> None:
    store, feature_set = demo_store
    output, libraries = run_and_list_model_libraries(store, [a.format(feature_set=feature_set) for a in args])
    assert says.format(feature_set=feature_set) in output
    assert libraries == []
