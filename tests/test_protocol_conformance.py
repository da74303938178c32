"""Every registered split protocol runs the ProtocolTests conformance suite."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from test_fit_splits import cid_like

from iqa_store.splits import PROTOCOLS
from iqa_store.splits.testing import ProtocolTests


def live_like() -> list[str]:
    """Reference groups of a LIVE-like dataset: 29 references, unequal numbers of distortions, rows shuffled."""
    rng = np.random.default_rng(0)
    groups = np.repeat([f"ref{i:02d}" for i in range(29)], rng.integers(20, 30, 29))
    return groups[rng.permutation(groups.size)].tolist()


class TestRandom8020(ProtocolTests):
    protocol_name = "random-80-20"
    expected_ratios = (0.8, 0.0, 0.2)
    repeated = grouped = True

    @pytest.fixture
    def n_rows(self) -> int:
        return 101


class TestRandom8020WithinImageSets(TestRandom8020):
    """Scene subsets dealt within each image set (CID2013 under the plain random protocol)."""

    @pytest.fixture
    def groups(self) -> list[str]:
        return cid_like()[0]

    @pytest.fixture
    def strata(self) -> list[str]:
        return cid_like()[1]

    @pytest.fixture
    def n_rows(self, groups: list[str]) -> int:
        return len(groups)


class TestRandom701020(ProtocolTests):
    protocol_name = "random-70-10-20"
    expected_ratios = (0.7, 0.1, 0.2)
    repeated = grouped = True

    @pytest.fixture
    def n_rows(self) -> int:
        return 1000


class TestRandom701020ByReference(TestRandom701020):
    @pytest.fixture
    def groups(self) -> list[str]:
        return live_like()

    @pytest.fixture
    def n_rows(self, groups: list[str]) -> int:
        return len(groups)


class TestRandom701020ByImage(ProtocolTests):
    """Groups are given and ignored: the ratios hold on rows."""

    protocol_name = "random-70-10-20-by-image"
    expected_ratios = (0.7, 0.1, 0.2)
    repeated = True

    @pytest.fixture
    def groups(self) -> list[str]:
        return np.repeat([f"ref{i}" for i in range(8)], 30).tolist()  # the demo: 8 contents x 30 versions

    @pytest.fixture
    def n_rows(self, groups: list[str]) -> int:
        return len(groups)


class TestOfficial(ProtocolTests):
    protocol_name = "official"
    LABELS = ["train", "test", None, "val", "train", float("nan"), "test", "train"]

    @pytest.fixture
    def official(self) -> list[object]:
        return self.LABELS

    @pytest.fixture
    def n_rows(self) -> int:
        return len(self.LABELS)

    @pytest.fixture
    def covered_rows(self) -> np.ndarray:
        return np.array([0, 1, 3, 4, 6, 7])  # the unlabelled rows 2 and 5 are in no part


class TestScenes42(ProtocolTests):
    protocol_name = "scenes-4-2"
    expected_ratios = (4 / 6, 0.0, 2 / 6)
    repeated = grouped = True

    @pytest.fixture
    def groups(self) -> list[str]:
        return cid_like()[0]

    @pytest.fixture
    def strata(self) -> list[str]:
        return cid_like()[1]

    @pytest.fixture
    def n_rows(self, groups: list[str]) -> int:
        return len(groups)


class TestZeroShot(ProtocolTests):
    protocol_name = "zero-shot"

    @pytest.fixture
    def n_rows(self) -> int:
        return 7


class TestTrainAll(ProtocolTests):
    protocol_name = "train-all"

    @pytest.fixture
    def n_rows(self) -> int:
        return 7


def test_every_registered_protocol_has_a_conformance_class() -> None:
    module = vars(sys.modules[__name__]).values()
    covered = {c.protocol_name for c in module if isinstance(c, type) and issubclass(c, ProtocolTests)
               and c is not ProtocolTests}
    missing = sorted(set(PROTOCOLS.names()) - covered)
    assert not missing, f"registered protocols without a ProtocolTests subclass here: {missing}"
