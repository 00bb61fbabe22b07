import json

import pytest

from deepatlas.data import DataError, choose_labelled, load_splits

IDS = [f"s{i}" for i in range(10)]


def test_seeded_choice_is_reproducible_and_seed_dependent():
    a = choose_labelled(IDS, num_labelled=3, seed=1)
    assert a == choose_labelled(list(reversed(IDS)), num_labelled=3, seed=1)
    assert len(a) == 3 and set(a) <= set(IDS)
    assert any(choose_labelled(IDS, num_labelled=3, seed=s) != a for s in range(2, 6))


def test_explicit_list_and_errors():
    assert choose_labelled(IDS, labelled_ids=["s4", "s2"]) == ["s2", "s4"]
    with pytest.raises(DataError, match="s99"):
        choose_labelled(IDS, labelled_ids=["s99"])
    with pytest.raises(DataError, match="only 10"):
        choose_labelled(IDS, num_labelled=11)
    assert choose_labelled(IDS) == sorted(IDS)


def test_splits_file(tmp_path):
    path = tmp_path / "splits.json"
    path.write_text(json.dumps({"train": ["a", "b"], "test": ["c"]}))
    assert load_splits(path) == {"train": ["a", "b"], "test": ["c"]}
    path.write_text(json.dumps({"train": ["a", "b"], "test": ["b"]}))
    with pytest.raises(DataError, match="'b' is in both"):
        load_splits(path)
