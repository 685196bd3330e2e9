"""``--augment none`` feeds the loop exactly the batches it was fed before the switch existed with augmentation
off (the stored tiles in the seeded shuffle order), and ``d4`` those it was fed with augmentation on."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from pathsegdiff.store import open_store
from pathsegdiff.train_head.checkpoint import HeadMeta
from pathsegdiff.train_head.data import TileDataset, make_loader
from pathsegdiff.train_head.fit import TrainConfig, fit_head
from pathsegdiff.train_head.heads import HeadConfig
from pathsegdiff.train_head.splits import read_splits


class Recorder(nn.Module):
    """Predicts nothing; keeps every training batch it is given."""

    def __init__(self, n_classes: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(n_classes, 1, 1))
        self.seen: list[tuple[dict, torch.Tensor]] = []

    def forward(self, inputs):
        x = next(iter(next(iter(inputs.features.values())).values()))
        return self.bias.expand(x.shape[0], -1, *inputs.size)

    def training_logits(self, inputs, labels, ignore_index):
        self.seen.append(({t: {b: v.clone() for b, v in d.items()} for t, d in inputs.features.items()}, labels.clone()))
        return self(inputs), labels


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), batch_size=st.integers(1, 9), augment=st.booleans())
def test_the_loop_sees_the_batches_of_the_dataset_with_or_without_augmentation(learnable_store, seed, batch_size,
                                                                              augment):
    fs = open_store(learnable_store)
    splits = read_splits(fs)
    blocks, steps = ("up1", "up2"), (50, 150)
    config = HeadConfig("fcn", tuple(fs.schema.features.block(b) for b in blocks), steps, 3, fs.schema.tile_size)
    meta = HeadMeta(config, tuple(fs.schema.class_names), fs.schema.ignore_index, fs.identity, {})
    head = Recorder(3)
    train = TileDataset(learnable_store, splits.train, blocks, steps)
    val = TileDataset(learnable_store, splits.val, blocks, steps)
    fit_head(head, train, val, TrainConfig(epochs=1, batch_size=batch_size, augment=augment), meta, seed,
             progress=False)
    # what the loop built before --augment existed: the dataset with augment on or off, the seeded loader
    before = TileDataset(learnable_store, splits.train, blocks, steps, augment=augment, seed=seed)
    before.set_epoch(0)
    expected = list(make_loader(before, batch_size, True, 0, seed))
    assert len(head.seen) == len(expected)
    for (features, labels), batch in zip(head.seen, expected):
        assert torch.equal(labels, batch["labels"])
        for t in steps:
            for b in blocks:
                assert torch.equal(features[t][b], batch["features"][t][b].float())
