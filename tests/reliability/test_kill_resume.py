"""kill -9 at 20 random points of an extraction, a training run and a fit grid, each resumed.

Each kind of run is made once uninterrupted (the reference, which also gives the duration the
kill points are fractions of). Then, 20 times, the same command runs from the same starting
state, is killed with SIGKILL at a point drawn from ``trials.SEED``, and is run again to the end.
What must hold every time:

- extraction (BRISQUE on 60 images in 20 row chunks; a tiny random-init open_clip ViT for a
  torch extractor): after the kill, every committed chunk reads back exactly as in the
  reference; the resumed run computes exactly the rows not committed before the kill (none
  twice), leaves the committed chunks' markers untouched, and the set is bit-equal to the
  reference;
- training (CNNIQA, checkpoint every 2 steps, dropout on): the resumed run starts from the
  checkpoint on disk at the kill, and registers exactly one encoder whose weights' sha256 and
  loss curve equal the reference's;
- fit grid (3 combinations x 10 splits, appended task by task): the resumed table has every
  cell once, equal to the reference cell by cell.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.conftest import TINY_CLIP_ARCH, TINY_CLIP_CONFIG
from tests.reliability.trials import (GRID_COMBOS, GRID_SPLITS, IMAGES, KEY, ROWS_PER_CHUNK, Snapshot, committed_cells,
                                      draws, extract_args, fit_args, grid_store, image_tree, kill_when, killed_midway,
                                      precreate, rerun, results_table, rows_differing)

pytestmark = pytest.mark.reliability

KILLS = 20
MODULE = "test_kill_resume.py"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return image_tree(tmp_path_factory.mktemp("kill") / "data")


# --- extraction ---------------------------------------------------------------------------------------------
EXTRACTORS = {
    # name: (model, kill points, environment, random init). BRISQUE is killed at times drawn over
    # its reference run; the torch model, whose start (building the network) takes most of a run
    # this small, is killed right after a drawn number of committed chunks.
    "brisque": ("brisque", KILLS, {}, False),
    "tiny-clip": (f"openclip:{TINY_CLIP_ARCH}:none", 3, None, True),
}


@pytest.fixture(scope="module")
def clip_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("openclip_configs")
    (folder / f"{TINY_CLIP_ARCH}.json").write_text(json.dumps(TINY_CLIP_CONFIG))
    return {"IQA_OPENCLIP_MODEL_CONFIGS": str(folder)}


@pytest.mark.parametrize("kind", list(EXTRACTORS))
def test_extraction_killed_at_random_points_resumes_bit_identical(kind: str, images: Path, forkserver, ledger,
                                                                  clip_env, tmp_path: Path, monkeypatch) -> None:
    model, kills, env, random_init = EXTRACTORS[kind]
    env = clip_env if env is None else env
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # precreate builds the extractor here, to get its fingerprint
    extra = ("--random-init",) if random_init else ()
    trial = f"kill -9 mid-extraction ({kind}, {IMAGES} images, {IMAGES // ROWS_PER_CHUNK} chunks)"

    def fresh(store: Path) -> list[str]:
        shutil.rmtree(store, ignore_errors=True)
        precreate(store, images, model, random_init=random_init)
        return extract_args(images, store, model, "toy", *extra)

    reference = forkserver.complete(fresh(tmp_path / "reference"), env, f"{kind}-reference")
    report = json.loads(reference.stdout)
    assert report["status"] == "complete" and report["computed"] == IMAGES
    from iqa_store.store import FeatureStore
    ref_fs = FeatureStore(tmp_path / "reference").get(report["feature_set"])
    expected, expected_status = ref_fs.read(), ref_fs.status()
    assert np.isfinite(expected).all()

    for number, fraction in enumerate(draws(trial, kills)):
        store = tmp_path / f"killed-{number}"
        if kind == "brisque":
            _, at = killed_midway(forkserver, lambda: fresh(store), fraction, reference.seconds, f"{kind}-kill{number}",
                                  env)
            fs = FeatureStore(store).get(report["feature_set"])
        else:
            argv = fresh(store)
            fs = FeatureStore(store).get(report["feature_set"])
            commits = 1 + int(fraction * (fs.n_chunks - 2))
            at = kill_when(forkserver, argv, lambda: len(fs.done_chunks()) >= commits, 0.0, f"{kind}-kill{number}",
                           env).seconds
        before = Snapshot.of(fs)
        committed = before.committed_rows(fs.rows_per_chunk, fs.n_rows)
        intact = before.intact(expected, expected_status)
        resumed = forkserver.run(extract_args(images, store, model, "toy", *extra), env, f"{kind}-resume{number}")
        status = resumed.wait()
        after = Snapshot.of(fs)
        outcome = json.loads(resumed.stdout) if status == 0 else {}
        lost = rows_differing(after.values, after.status, expected, expected_status)
        duplicated = max(0, outcome.get("computed", 0) + committed - IMAGES)
        untouched = all(after.markers.get(k) == text for k, text in before.markers.items())
        survived = (status == 0 and outcome.get("status") == "complete" and lost == 0 and duplicated == 0
                    and intact and untouched and outcome.get("computed") == IMAGES - committed)
        ledger.record(trial, rerun(MODULE, f"extraction and {kind}"), survived=survived, rows_lost=lost,
                      rows_duplicated=duplicated, recover_seconds=resumed.seconds)
        print(f"{trial}: kill {number} at {at:.3f} s ({fraction:.2f} of {reference.seconds:.2f} s): "
              f"{len(before.markers)} chunks committed, resumed in {resumed.seconds:.2f} s")
        assert status == 0, resumed.stderr[-3000:]
        assert intact, f"kill {number}: committed rows differ from the reference before the resume"
        assert untouched, f"kill {number}: the resume rewrote chunks committed before the kill"
        assert survived, (number, outcome, committed, lost, duplicated)


# --- training -----------------------------------------------------------------------------------------------
def train_args(images: Path, store: Path) -> list[str]:
    return ["train", "cnniqa", "-d", "csv", "--root", str(images), "-o", "labels=labels.csv",
            "-o", "dataset_name=toy", "--protocol", "random-80-20", "--splits", "1", "--fc-width", "32",
            "--dropout", "0.5", "--patches-per-image", "4", "--steps", "40", "--batch-size", "4", "--lr", "0.01",
            "--workers", "0", "--checkpoint-every", "2", "--device", "cpu", "--store", str(store), "-q",
            "--format", "json"]


def _checkpoint_step(store: Path) -> int:
    """The step of the checkpoint on disk (0: none); it must load with weights_only=True."""
    found = sorted(store.glob("pretrain/*/checkpoint.pt"))
    assert len(found) <= 1, found
    return int(torch.load(found[0], weights_only=True)["step"]) if found else 0


def test_training_killed_at_random_points_registers_the_same_weights(images: Path, forkserver, ledger,
                                                                     tmp_path: Path) -> None:
    from iqa_store.store import FeatureStore, list_encoders
    trial = "kill -9 mid-training (cnniqa, 40 steps, checkpoint every 2)"

    def fresh(store: Path) -> list[str]:
        shutil.rmtree(store, ignore_errors=True)
        return train_args(images, store)

    reference = forkserver.complete(fresh(tmp_path / "reference"), name="train-reference")
    [expected] = list_encoders(FeatureStore(tmp_path / "reference"))
    for number, fraction in enumerate(draws(trial, KILLS)):
        store = tmp_path / f"killed-{number}"
        _, at = killed_midway(forkserver, lambda: fresh(store), fraction, reference.seconds, f"train-kill{number}")
        step = _checkpoint_step(store)
        already = len(list_encoders(FeatureStore(store)))
        resumed = forkserver.run(train_args(images, store), name=f"train-resume{number}")
        status = resumed.wait()
        outcome = json.loads(resumed.stdout) if status == 0 else {}
        encoders = list_encoders(FeatureStore(store))
        same = [e for e in encoders if e.weights_sha256 == expected.weights_sha256
                and e.provenance["loss_curve"] == expected.provenance["loss_curve"]]
        from_checkpoint = outcome.get("start_step") == (40 if already else step)
        survived = status == 0 and len(encoders) == 1 and len(same) == 1 and from_checkpoint
        ledger.record(trial, rerun(MODULE, "training"), survived=survived, rows_lost=0 if same else 1,
                      rows_duplicated=max(0, len(encoders) - 1), recover_seconds=resumed.seconds)
        print(f"{trial}: kill {number} at {at:.3f} s ({fraction:.2f} of {reference.seconds:.2f} s): checkpoint at "
              f"step {step}, resumed from step {outcome.get('start_step')} in {resumed.seconds:.2f} s")
        assert status == 0, resumed.stderr[-3000:]
        assert survived, (number, step, outcome.get("start_step"), [e.id for e in encoders], expected.id)


# --- fit grid -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def base_grid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return grid_store(tmp_path_factory.mktemp("grid"))


def test_fit_grid_killed_at_random_points_completes_the_same_table(base_grid: Path, forkserver, ledger,
                                                                   tmp_path: Path) -> None:
    trial = f"kill -9 mid-fit ({len(GRID_COMBOS)} combinations x {GRID_SPLITS} splits)"
    cells = len(GRID_COMBOS) * GRID_SPLITS

    def fresh(store: Path) -> list[str]:
        shutil.rmtree(store, ignore_errors=True)
        shutil.copytree(base_grid, store)
        return fit_args(store)

    reference = forkserver.complete(fresh(tmp_path / "reference"), name="fit-reference")
    expected = results_table(tmp_path / "reference").sort_values(KEY, ignore_index=True)
    assert len(expected) == cells
    tasks = len(list((tmp_path / "reference").glob("results/*/grid/predictions/*")))  # one part per append
    assert tasks >= 3, "the grid must be appended in several tasks for kills to land between them"
    summary = json.loads(reference.stdout)["summary"]
    for number, fraction in enumerate(draws(trial, KILLS, 0.0, 1.0)):
        # the kill point, drawn over the run: after `appends` tasks are in the table, part way into the next
        appends, into = divmod(fraction * tasks, 1.0)
        store = tmp_path / f"killed-{number}"
        argv = fresh(store)
        at = kill_when(forkserver, argv, lambda: committed_cells(store) >= appends * cells // tasks,
                       0.8 * into * reference.seconds / tasks, f"fit-kill{number}").seconds
        before = committed_cells(store)
        resumed = forkserver.run(fit_args(store), name=f"fit-resume{number}")
        status = resumed.wait()
        table = results_table(store) if status == 0 else pd.DataFrame(columns=KEY)
        duplicated = int(table.duplicated(KEY).sum())
        table = table.drop_duplicates(KEY).sort_values(KEY, ignore_index=True)
        merged = expected.merge(table, on=KEY, how="left", suffixes=("", "_resumed"), indicator=True)
        lost = int((merged["_merge"] != "both").sum())
        equal = lost == 0 and len(table) == cells and table.equals(expected)
        same_summary = status == 0 and json.loads(resumed.stdout)["summary"] == summary
        survived = status == 0 and equal and duplicated == 0 and same_summary
        ledger.record(trial, rerun(MODULE, "fit_grid"), survived=survived, rows_lost=lost,
                      rows_duplicated=duplicated, recover_seconds=resumed.seconds)
        print(f"{trial}: kill {number} at {at:.3f} s ({fraction:.2f} of {reference.seconds:.2f} s): {before} cells "
              f"in the table, resumed in {resumed.seconds:.2f} s")
        assert status == 0, resumed.stderr[-3000:]
        assert survived, (number, before, lost, duplicated)
