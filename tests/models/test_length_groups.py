"""Batches cut by length (annotator/models/length_groups.py)."""

from __future__ import annotations

from annotator.models.length_groups import length_groups


def test_groups_of_like_length_cover_every_item_once_within_the_padding_bound():
    lengths = [300, 20, 310, 22, 150, 21, 160, 305, 1]
    groups = length_groups(lengths, max_padding=1.25)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for group in groups:
        sizes = [lengths[i] for i in group]
        assert max(sizes) * len(sizes) <= 1.25 * sum(sizes)
    # Like lengths share a group: the three short, the two middle, the three long ones.
    assert [sorted(lengths[i] for i in g) for g in groups] == [
        [1],
        [20, 21, 22],
        [150, 160],
        [300, 305, 310],
    ]


def test_one_length_is_one_group_and_no_padding_allowed_splits_unequal_ones():
    assert length_groups([5, 5, 5, 5]) == [[0, 1, 2, 3]]
    assert length_groups([5, 6, 5], max_padding=1.0) == [[0, 2], [1]]
    assert length_groups([]) == []
