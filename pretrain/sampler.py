"""Label-balanced batches for supervised contrastive learning: m labels × k items each."""

from __future__ import annotations

import numpy as np

__all__ = ["BalancedSampler"]


class BalancedSampler:
    """Batches of m labels × k items, so every anchor has in-batch positives.

    Only labels held by at least 2 items take part (-1 = missing is skipped). Labels are drawn
    uniformly without replacement (all of them if fewer than m), then k items of each without
    replacement (all of a label's items if it has fewer than k), from a seeded generator.
    """

    def __init__(self, labels: np.ndarray, labels_per_batch: int, items_per_label: int, seed: int):
        if labels_per_batch < 1 or items_per_label < 2:
            raise ValueError(
                f"need labels_per_batch >= 1 and items_per_label >= 2, got "
                f"{labels_per_batch} and {items_per_label}"
            )
        self.rng = np.random.default_rng(seed)
        self.m, self.k = labels_per_batch, items_per_label
        labels = np.asarray(labels)
        valid = np.flatnonzero(labels >= 0)
        order = valid[np.argsort(labels[valid], kind="stable")]
        _, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
        keep = counts >= 2
        self.groups = [order[s : s + c] for s, c in zip(starts[keep], counts[keep], strict=True)]
        if not self.groups:
            raise ValueError("no label is held by at least 2 items")

    @property
    def batch_size(self) -> int:
        """Items per batch when every drawn label has at least k items."""
        return min(self.m, len(self.groups)) * self.k

    def sample(self) -> np.ndarray:
        """Item indices of one batch, grouped by label."""
        chosen = self.rng.choice(
            len(self.groups), size=min(self.m, len(self.groups)), replace=False
        )
        return np.concatenate(
            [
                self.rng.choice(
                    self.groups[g], size=min(self.k, len(self.groups[g])), replace=False
                )
                for g in chosen
            ]
        )
