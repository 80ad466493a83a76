"""make_dataset: normalised float CHW tensors, the augmentation presets, reproducible per (seed,
epoch, image) whatever the number of DataLoader workers."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from attnsweep.data import DatasetSpec, SplitSpec, load_split, make_dataset, prepare


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    data_dir = prepare(DatasetSpec(format="synthderm", options={"n": 200}), SplitSpec(search_splits=1, repeat_splits=0),
                       40, out, workers=1)
    return load_split(data_dir, "search-0")


def batch(ds, n=16, workers=0):
    return next(iter(DataLoader(ds, batch_size=n, shuffle=False, num_workers=workers)))


def test_evaluation_sets_are_only_normalised(split):
    ds = make_dataset(split.sets["val"], "perez2018", split.mean, split.std, train=False, seed=0)
    x, y = ds[3]
    assert x.shape == (3, 40, 40) and x.dtype == torch.float32 and y == split.sets["val"].labels[3]
    raw = torch.from_numpy(split.sets["val"].images[3]).permute(2, 0, 1).float() / 255
    expect = (raw - torch.tensor(split.mean).view(3, 1, 1)) / torch.tensor(split.std).view(3, 1, 1)
    torch.testing.assert_close(x, expect)
    train = make_dataset(split.sets["train"], "none", split.mean, split.std, train=True, seed=0)
    xs = torch.stack([train[i][0] for i in range(len(train))])
    torch.testing.assert_close(xs.mean((0, 2, 3)), torch.zeros(3), atol=1e-4, rtol=0)  # the train split's own stats
    torch.testing.assert_close(xs.std((0, 2, 3)), torch.ones(3), atol=1e-3, rtol=0)


@pytest.mark.parametrize("preset", ["flip_rot20", "perez2018"])
def test_presets_are_reproducible_per_seed_and_epoch(split, preset):
    def make(seed):
        return make_dataset(split.sets["train"], preset, split.mean, split.std, train=True, seed=seed)

    a, b, c = make(0), make(0), make(1)
    xa, ya = batch(a)
    xb, yb = batch(b)
    torch.testing.assert_close(xa, xb)
    assert torch.equal(ya, yb)
    assert not torch.allclose(xa, batch(c)[0])  # another seed, other augmentations
    plain = batch(make_dataset(split.sets["train"], "none", split.mean, split.std, train=True, seed=0))[0]
    assert not torch.allclose(xa, plain)  # the preset does change the images
    a.set_epoch(1)
    x1 = batch(a)[0]
    assert not torch.allclose(xa, x1)  # a new epoch draws new augmentations
    torch.testing.assert_close(x1, batch(a, workers=2)[0])  # workers do not change them
    assert x1.shape == (16, 3, 40, 40)


def test_unknown_preset(split):
    with pytest.raises(ValueError, match="unknown augmentation preset 'mixup'"):
        make_dataset(split.sets["val"], "mixup", split.mean, split.std, train=False, seed=0)
