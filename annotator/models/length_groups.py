"""Batches cut by length: a padded batch costs its longest item times its size, so a batch of
mixed lengths runs as a few forwards of items of like length, in the order the caller gave."""

from __future__ import annotations

from collections.abc import Sequence

# A group takes items while its padded size stays within this factor of its real size.
MAX_PADDING = 1.25


def length_groups(lengths: Sequence[int], max_padding: float = MAX_PADDING) -> list[list[int]]:
    """Indices of ``lengths`` in groups of like length, shortest first: a group takes the next
    longer item while ``longest × count ≤ max_padding × total`` still holds."""
    groups: list[list[int]] = []
    total = 0
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        n = lengths[i]
        group = groups[-1] if groups else None
        if group is not None and n * (len(group) + 1) <= max_padding * (total + n):
            group.append(i)
            total += n
        else:
            groups.append([i])
            total = n
    return groups
