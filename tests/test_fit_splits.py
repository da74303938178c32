import numpy as np
import pytest

from iqa_store.splits import PROTOCOLS, ProtocolSpec, Split, make_splits, splits_key


def check_partition(split: Split, n_rows: int) -> None:
    parts = [split.train, split.val, split.test]
    for part in parts:
        assert np.all(np.diff(part) > 0), "indices must be sorted and unique"
    joined = np.concatenate(parts)
    assert joined.size == np.unique(joined).size, "parts overlap"
    np.testing.assert_array_equal(np.sort(joined), np.arange(n_rows))


def test_registry_lists_protocols():
    assert PROTOCOLS.names() == ["official", "random-70-10-20", "random-70-10-20-by-image", "random-80-20",
                                 "scenes-4-2", "train-all", "zero-shot"]


def test_random_80_20_partitions_with_exact_ratio():
    splits = make_splits(ProtocolSpec("random-80-20"), 1162)
    assert len(splits) == 10 and [s.index for s in splits] == list(range(10))
    for split in splits:
        check_partition(split, 1162)
        assert (split.train.size, split.val.size, split.test.size) == (930, 0, 232)  # 1162 * 0.2 = 232.4 -> 232
    assert not np.array_equal(splits[0].test, splits[1].test)


def test_custom_ratios():
    split = make_splits(ProtocolSpec("random-80-20", n_splits=1, ratios=(0.6, 0.2, 0.2)), 50)[0]
    assert (split.train.size, split.val.size, split.test.size) == (30, 10, 10)


def test_by_image_split_ignores_references_and_equals_the_ungrouped_split():
    groups = np.repeat([f"ref{i}" for i in range(8)], 30)  # the demo: 8 contents x 30 versions
    by_image = make_splits(ProtocolSpec("random-70-10-20-by-image", n_splits=3), groups.size, groups=groups)
    plain = make_splits(ProtocolSpec("random-70-10-20", n_splits=3), groups.size)
    for a, b in zip(by_image, plain):
        check_partition(a, groups.size)
        assert (a.train.size, a.val.size, a.test.size) == (168, 24, 48)
        assert all(np.array_equal(x, y) for x, y in ((a.train, b.train), (a.val, b.val), (a.test, b.test)))
        assert set(groups[a.train]) & set(groups[a.test])  # contents are shared, by design


def test_splits_are_pinned():
    # Stored splits are looked up by key; a change to either silently orphans them.
    split = make_splits(ProtocolSpec("random-80-20", n_splits=1), 20)[0]
    assert split.test.tolist() == PINNED_TEST
    assert split.key == PINNED_KEY


PINNED_TEST = [1, 9, 14, 15]
PINNED_KEY = "f00819a173cd7c24"


def test_key_reflects_every_input():
    spec = ProtocolSpec("random-80-20")
    base = splits_key(spec, 100)
    assert splits_key(ProtocolSpec("random-80-20", ratios=(0.8, 0.0, 0.2)), 100) == base  # defaults resolved
    others = [splits_key(ProtocolSpec("random-80-20", seed=1), 100), splits_key(spec, 101),
              splits_key(ProtocolSpec("random-80-20", n_splits=5), 100),
              splits_key(spec, 100, groups=np.arange(100) // 4),
              splits_key(ProtocolSpec("random-70-10-20"), 100)]
    assert len({base, *others}) == 1 + len(others)
    assert all(s.key == base for s in make_splits(spec, 100))


def test_official_split():
    labels = ["train", "test", None, "val", "train", float("nan"), "test", "train"]
    (split,) = make_splits(ProtocolSpec("official"), len(labels), official=labels)
    assert split.train.tolist() == [0, 4, 7]
    assert split.val.tolist() == [3]
    assert split.test.tolist() == [1, 6]
    assert split.key == splits_key(ProtocolSpec("official"), len(labels), official=labels)


@pytest.mark.parametrize("official", [None, [None] * 5])
def test_official_split_missing(official):
    with pytest.raises(ValueError, match="official"):
        make_splits(ProtocolSpec("official"), 5, official=official)


def test_official_split_bad_labels():
    with pytest.raises(ValueError, match="train/val/test"):
        make_splits(ProtocolSpec("official"), 3, official=["train", "testing", "test"])
    with pytest.raises(ValueError, match="no train or no test"):
        make_splits(ProtocolSpec("official"), 3, official=["train", "train", "val"])


@pytest.mark.parametrize("kwargs, n_rows", [
    ({"ratios": (0.5, 0.0, 0.4)}, 100),  # does not sum to 1
    ({"ratios": (1.0, 0.0, 0.0)}, 100),  # no test part
    ({"ratios": (0.9, -0.1, 0.2)}, 100),  # negative
    ({}, 2),  # 2 * 0.2 rounds to 0 test rows
    ({"n_splits": 0}, 100),
])
def test_invalid_settings_raise(kwargs, n_rows):
    with pytest.raises(ValueError):
        make_splits(ProtocolSpec("random-80-20", **kwargs), n_rows)


def test_unknown_protocol_and_length_mismatch():
    with pytest.raises(KeyError, match="unknown protocol"):
        make_splits(ProtocolSpec("leave-one-out"), 10)
    with pytest.raises(ValueError, match="groups"):
        make_splits(ProtocolSpec("random-80-20"), 10, groups=[1, 2, 3])


def test_split_arrays_are_read_only():
    split = make_splits(ProtocolSpec("random-80-20", n_splits=1), 10)[0]
    with pytest.raises(ValueError):
        split.train[0] = 5


# --- stratified groups (CID2013), zero-shot ------------------------------------------------------


def cid_like(n_sets: int = 6, scenes: int = 6, devices: tuple[int, ...] = (12, 13, 14)) -> tuple[list[str], list[str]]:
    """Scene-subset groups and image-set strata of a CID2013-shaped dataset, rows shuffled."""
    rng = np.random.default_rng(1)
    groups, strata = [], []
    for s in range(1, n_sets + 1):
        for c in range(1, scenes + 1):
            n = devices[(s + c) % len(devices)]
            groups += [f"IS{s}/co{c}"] * n
            strata += [f"IS{s}"] * n
    order = rng.permutation(len(groups))
    return [groups[i] for i in order], [strata[i] for i in order]


def test_scenes_4_2_trains_on_four_scene_subsets_of_every_image_set():
    groups, strata = cid_like()
    splits = make_splits(ProtocolSpec("scenes-4-2"), len(groups), groups=groups, strata=strata)
    assert len(splits) == 10
    garray, sarray = np.array(groups), np.array(strata)
    for split in splits:
        check_partition(split, len(groups))
        assert split.val.size == 0
        for image_set in sorted(set(strata)):
            train = set(garray[split.train][sarray[split.train] == image_set])
            test = set(garray[split.test][sarray[split.test] == image_set])
            assert (len(train), len(test)) == (4, 2) and not train & test
    assert len({tuple(s.test) for s in splits}) == 10  # different scene subsets drawn each time


def test_random_80_20_on_strata_keeps_every_scene_in_one_part():
    groups, strata = cid_like()
    for split in make_splits(ProtocolSpec("random-80-20", n_splits=3), len(groups), groups=groups, strata=strata):
        garray = np.array(groups)
        assert not set(garray[split.train]) & set(garray[split.test])
        assert len(set(garray[split.test])) == 6  # 6 * 0.2 = 1.2 -> 1 scene subset per image set


def test_scenes_protocol_needs_groups_and_groups_must_nest_in_strata():
    with pytest.raises(ValueError, match="splits by groups"):
        make_splits(ProtocolSpec("scenes-4-2"), 12)
    with pytest.raises(ValueError, match="1 group.* span several strata"):
        make_splits(ProtocolSpec("scenes-4-2"), 4, groups=["a", "a", "b", "c"], strata=["x", "y", "y", "y"])


def test_strata_enter_the_key_only_when_given():
    groups, strata = cid_like()
    spec = ProtocolSpec("random-80-20")
    plain = splits_key(spec, len(groups), groups=groups)
    assert splits_key(spec, len(groups), groups=groups, strata=strata) != plain
    assert make_splits(spec, len(groups), groups=groups)[0].key == plain


def test_zero_shot_is_the_whole_dataset_as_test():
    (split,) = make_splits(ProtocolSpec("zero-shot"), 7)
    assert split.train.size == 0 and split.val.size == 0 and split.test.tolist() == list(range(7))
