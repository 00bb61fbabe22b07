"""Label fusion shared by atlas-segment and the teachers of joint training."""

import pytest
import torch

from deepatlas.registration.fusion import MIN_WEIGHT, LabelVotes, similarity_weight


def _maps(*rows):
    return [torch.tensor(r).view(1, 3) for r in rows]


def test_votes_take_the_majority_and_weights_decide_between_atlases():
    a, b, c = _maps([1, 2, 3], [1, 5, 4], [7, 5, 6])
    majority = LabelVotes(8, (1, 3))
    for labels in (a, b, c):
        majority.add(labels)
    assert majority.winner().flatten().tolist()[:2] == [1, 5]  # the third voxel is a three-way tie
    weighted = LabelVotes(8, (1, 3), dtype=torch.float64)
    for labels, weight in ((a, [1.0, 1.0, 1.0]), (b, [1.0, 1.0, 1.0]), (c, [1.0, 1.0, 3.0])):
        weighted.add(labels, torch.tensor(weight).view(1, 3))
    assert weighted.winner().flatten().tolist() == [1, 5, 6]  # c matches best at the third voxel


def test_a_vote_weighs_an_atlas_by_how_well_it_matches_the_target_locally():
    torch.manual_seed(0)
    target = torch.rand(1, 1, 12, 12, 12)
    good = similarity_weight(target * 2 + 1, target)  # a linear relation: NCC 1 everywhere
    bad = similarity_weight(torch.rand(1, 1, 12, 12, 12), target)
    assert good.shape == target.shape and good.mean() > 0.85  # measured 0.92 (random bad: 0.28)
    assert bad.mean() < 0.5 and bad.min() >= MIN_WEIGHT


def test_a_soft_vote_counts_its_probabilities_times_its_weight():
    atlas = torch.tensor([[1, 1, 2]])  # labels of one atlas on a 1 x 3 grid, NCC weight 0.5
    seg = torch.tensor([[[0.0, 0.0, 0.0]], [[0.9, 0.2, 0.0]], [[0.1, 0.8, 1.0]]])  # 3 labels x 1 x 3
    for weight, expected in ((0.25, [1, 1, 2]), (1.0, [1, 2, 2])):
        votes = LabelVotes(3, (1, 3), dtype=torch.float64)
        votes.add(atlas, torch.full((1, 3), 0.5))
        votes.add_probabilities(seg, weight)
        # the middle voxel: atlas 0.5 for label 1 against 0.2 w for 1 and 0.8 w for 2
        assert votes.winner().flatten().tolist() == expected
    with pytest.raises(ValueError, match="one row per label"):
        votes.add_probabilities(seg[:2], 1.0)
