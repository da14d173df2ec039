"""Plain helpers shared by tests (importable as `support`; fixtures live in conftest.py)."""

import numpy as np

from fame.data import SplitData
from fame.metrics import metrics_from_ranks

# small settings for pipeline runs on the ml-100k slice
SMALL = {"train.epochs": 2, "pretrain.steps": 60, "model.d": 32, "train.eval_batch_size": 256}


def cyclic_split(
    num_users: int = 120, num_items: int = 40, length: int = 14, noise: float = 0.1, seed: int = 0
) -> SplitData:
    """Users walk a fixed item cycle (next = perm[cur]) with a little noise: learnable order."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(num_items) + 1
    nxt = np.zeros(num_items + 1, dtype=np.int64)
    nxt[perm] = np.roll(perm, -1)
    seqs = []
    for _ in range(num_users):
        cur = int(rng.integers(1, num_items + 1))
        seq = [cur]
        for _ in range(length - 1):
            cur = int(rng.integers(1, num_items + 1)) if rng.random() < noise else int(nxt[cur])
            seq.append(cur)
        seqs.append(seq)
    train = [s[:-2] for s in seqs]
    offsets = np.concatenate([[0], np.cumsum([len(t) for t in train])]).astype(np.int64)
    return SplitData(
        user_ids=np.arange(1, num_users + 1, dtype=np.int64),
        offsets=offsets,
        items=np.concatenate(train).astype(np.int64),
        valid=np.array([s[-2] for s in seqs], dtype=np.int64),
        test=np.array([s[-1] for s in seqs], dtype=np.int64),
        num_items=num_items,
    )


def popularity_ndcg10(data, split="valid", exclude=True):
    """Most-popular baseline under the same protocol (ties pessimistic, history excluded)."""
    offsets, items = data.inputs(split)
    counts = np.bincount(data.items, minlength=data.num_items + 1).astype(float)
    counts[0] = -np.inf
    ranks = []
    for u, t in enumerate(data.targets(split)):
        s = counts.copy()
        if exclude:
            hist = items[offsets[u] : offsets[u + 1]]
            s[hist[hist != t]] = -np.inf
        ranks.append(int((s >= s[t]).sum()))
    return metrics_from_ranks(np.array(ranks))["ndcg@10"]
