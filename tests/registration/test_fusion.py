"""Label fusion shared by atlas-segment and the teachers of joint training."""

import pytest
import torch

from deepatlas.registration.fusion import MIN_WEIGHT, LabelVotes, similarity_weight, vote_within_classes


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


def test_a_class_voter_decides_the_class_and_the_atlases_keep_their_code_within_it():
    """Fine labels 0, 10, 11 (rows 0-2; classes 0, 1, 1) against a voter over the two classes, weight 2."""
    fine = LabelVotes(3, (3,), dtype=torch.float64)
    fine.votes[:, 0] = torch.tensor([0.6, 0.3, 0.2])  # class 1 by the voter (0.5 + 2 > 0.6); code 10 over 11
    fine.votes[:, 1] = torch.tensor([1.0, 0.0, 0.0])  # class 1 by the voter, but no atlas voted for it
    fine.votes[:, 2] = torch.tensor([0.0, 0.0, 2.5])  # the atlases outvote the voter's class 0 (2.5 > 2)
    probabilities = torch.tensor([[0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    classes, rows = vote_within_classes(fine, torch.tensor([0, 1, 1]), probabilities, weight=2.0)
    assert classes.tolist() == [1, 1, 1]
    assert rows.tolist() == [1, -1, 2]  # -1: the class came from the voter alone
    # without the voter the fine votes alone decide, as the atlases alone would
    classes, rows = vote_within_classes(fine, torch.tensor([0, 1, 1]), probabilities, weight=0.0)
    assert classes.tolist() == [0, 0, 1] and rows.tolist() == [0, 0, 2]
