import pytest

from iqa_store.fit.combinations import combination_name, parse_combinations


def test_explicit_strings():
    assert parse_combinations(["brisque", "brisque+clip-vitb16", " clip-vitb16 + brisque "]) == [
        ("brisque",), ("brisque", "clip-vitb16")]
    assert parse_combinations("a+b") == [("a", "b")]


def test_all_subsets_up_to_max_size():
    assert parse_combinations(all_combos=["a", "b", "c"]) == [
        ("a",), ("b",), ("c",), ("a", "b"), ("a", "c"), ("b", "c"), ("a", "b", "c")]
    assert parse_combinations(all_combos=["a", "b", "c"], max_size=2)[-1] == ("b", "c")
    assert len(parse_combinations(all_combos=list("abcde"), max_size=1)) == 5


def test_cross_product_of_two_groups():
    lmms, iqa = ["clip", "align", "altclip", "hps"], ["brisque", "cnniqa", "metaiqa"]
    combos = parse_combinations(cross=lmms, with_=iqa)
    assert len(combos) == 12
    assert combos[:3] == [("clip", "brisque"), ("clip", "cnniqa"), ("clip", "metaiqa")]
    assert parse_combinations(cross=["a+b"], with_=["c"]) == [("a", "b", "c")]


def test_dedup_and_name_order_by_first_appearance():
    combos = parse_combinations(["clip"], all_combos=["brisque", "clip"], cross=["clip"], with_=["brisque"])
    assert combos == [("clip",), ("brisque",), ("clip", "brisque")]
    assert [combination_name(c) for c in combos] == ["clip", "brisque", "clip+brisque"]


@pytest.mark.parametrize("kwargs, message", [
    ({}, "no feature combinations"),
    ({"features": [""]}, "empty"),
    ({"features": ["a++b"]}, "empty"),
    ({"features": ["a+a"]}, "repeated"),
    ({"features": [3]}, "strings"),
    ({"max_size": 2}, "needs all_combos"),
    ({"all_combos": ["a", "b"], "max_size": 0}, "max_size"),
    ({"all_combos": ["a+b"]}, "single feature"),
    ({"cross": ["a"]}, "together"),
    ({"cross": ["a"], "with_": ["a"]}, "shares"),
    ({"all_combos": [f"f{i}" for i in range(13)]}, "limit"),
])
def test_invalid_specs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        parse_combinations(**kwargs)
