import pytest
import torch

from deepatlas.data import PairSampler

HAS_LABEL = [True, True, False, False, False, True]


@pytest.mark.parametrize(
    "group, moving_labelled, fixed_labelled",
    [("neither", False, False), ("moving", True, False), ("fixed", False, True), ("both", True, True)],
)
def test_pairs_come_from_the_requested_group(group, moving_labelled, fixed_labelled):
    sampler = PairSampler(HAS_LABEL, {group: 1.0}, torch.Generator().manual_seed(0))
    for _ in range(30):
        g, moving, fixed = sampler.sample(4)
        assert g == group
        for m, f in zip(moving, fixed):
            assert m != f
            assert HAS_LABEL[m] == moving_labelled and HAS_LABEL[f] == fixed_labelled


def test_group_weights_are_respected():
    sampler = PairSampler(HAS_LABEL, {"neither": 3.0, "both": 1.0}, torch.Generator().manual_seed(0))
    groups = [sampler.sample_group() for _ in range(4000)]
    assert set(groups) == {"neither", "both"}
    assert groups.count("neither") / len(groups) == pytest.approx(0.75, abs=0.03)


def test_impossible_groups_are_dropped():
    # one labelled image: no 'both' pair without pairing it with itself
    sampler = PairSampler([True, False, False], {"both": 1.0, "moving": 1.0}, torch.Generator().manual_seed(0))
    assert sampler.groups == ["moving"]
    with pytest.raises(ValueError, match="no pair group"):
        PairSampler([True, False, False], {"both": 1.0})


def test_never_pairs_an_image_with_itself_in_a_pool_of_two():
    sampler = PairSampler([False, False], {"neither": 1.0}, torch.Generator().manual_seed(0))
    for _ in range(50):
        _, moving, fixed = sampler.sample(2)
        assert all(m != f for m, f in zip(moving, fixed))


def test_same_seed_same_pairs():
    a = PairSampler(HAS_LABEL, {"neither": 1, "moving": 1}, torch.Generator().manual_seed(5))
    b = PairSampler(HAS_LABEL, {"neither": 1, "moving": 1}, torch.Generator().manual_seed(5))
    assert [a.sample(2) for _ in range(10)] == [b.sample(2) for _ in range(10)]


def test_unknown_group_name():
    with pytest.raises(ValueError, match="unknown pair groups"):
        PairSampler(HAS_LABEL, {"all": 1.0})
