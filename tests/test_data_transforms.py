"""make_dataset: normalised float CHW tensors, the augmentation presets, reproducible per (seed,
epoch, image) whatever the number of DataLoader workers. DeviceTransform (the trainer's path):
uint8 batches augmented with per-sample draws in the preset's ranges, reproducible per (seed, epoch,
rank, batch), evaluation only normalised."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from attnsweep.data import DatasetSpec, SplitSpec, load_split, make_dataset, prepare
from attnsweep.data.device_augment import DeviceTransform, batch_seed, colour_jitter


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


# The training path: uint8 batches augmented on the device (here the CPU) with per-sample draws.

def uint8_batch(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def normalised(x: torch.Tensor, mean, std) -> torch.Tensor:
    mean, std = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    return (x.permute(0, 3, 1, 2).float() / 255 - mean) / std


MEAN, STD = [0.6, 0.5, 0.4], [0.2, 0.25, 0.3]


@pytest.mark.parametrize("preset", ["none", "flip_rot20", "perez2018"])
def test_batches_are_reproducible_from_the_seed_and_evaluation_is_only_normalised(preset):
    x = uint8_batch(12, 24)
    t = DeviceTransform(preset, 24, MEAN, STD)
    a, b, c = t(x, seed=batch_seed(0, 1, 0, 0)), t(x, seed=batch_seed(0, 1, 0, 0)), t(x, seed=batch_seed(0, 1, 0, 1))
    assert a.shape == (12, 3, 24, 24) and a.dtype == torch.float32
    assert torch.equal(a, b)  # the same (seed, epoch, rank, batch): the same batch
    assert torch.equal(a, c) == (preset == "none")  # another batch index: other draws
    torch.testing.assert_close(t(x), normalised(x, MEAN, STD))  # no seed (evaluation): only normalised
    state = torch.get_rng_state()
    t(x, seed=123)
    assert torch.equal(torch.get_rng_state(), state)  # the model's random stream is untouched


def test_perez2018_draws_per_sample_parameters_within_the_preset_ranges():
    n, size = 512, 16
    t = DeviceTransform("perez2018", size, MEAN, STD)
    t(uint8_batch(n, size), seed=7)
    p = t.augment.params

    def spans(v, low, high, slack):  # within [low, high], and the draws reach near both ends
        assert low - 1e-6 <= v.min() and v.max() <= high + 1e-6, (v.min(), v.max(), low, high)
        assert v.min() < low + slack and v.max() > high - slack, (v.min(), v.max())
        assert len(torch.unique(v)) > n // 2  # per sample, not one draw for the batch

    affine = p["affine"]
    spans(affine["angle"], -90, 90, 5)
    spans(affine["shear_x"], -20, 20, 2)
    assert torch.all(affine["shear_y"] == 0)  # x-shear only, as torchvision's and imgaug's single value
    spans(affine["scale"][:, 0], 0.8, 1.2, 0.03)
    assert torch.equal(affine["scale"][:, 0], affine["scale"][:, 1])  # isotropic
    colour = p["colour"]
    for k in ("brightness", "contrast", "saturation"):
        spans(colour[f"{k}_factor"], 0.7, 1.3, 0.03)
    spans(colour["hue_factor"], -0.1, 0.1, 0.01)
    box = p["crop"]["src"]  # corners of the crop in pixels (inclusive)
    w, h = box[:, 1, 0] - box[:, 0, 0] + 1, box[:, 2, 1] - box[:, 1, 1] + 1
    area = w * h / size**2
    assert area.min() >= 0.4 - 0.1 and area.max() <= 1.0  # scale 0.4-1 (rounded to whole pixels)
    assert len(torch.unique(box[:, 0, 0] * size + box[:, 0, 1])) > 1
    for flip in ("hflip", "vflip"):
        coin = p[flip]["batch_prob"]
        assert 0.4 < coin.float().mean() < 0.6  # p 0.5, per sample


def test_flip_rot20_rotates_at_most_20_degrees_and_flips_exactly():
    n, size = 256, 16
    t = DeviceTransform("flip_rot20", size, MEAN, STD)
    x = uint8_batch(n, size)
    y = t(x, seed=3)
    p = t.augment.params
    degrees = p["rotation"]["degrees"]
    assert degrees.abs().max() <= 20 and degrees.abs().max() > 18 and len(torch.unique(degrees)) == n
    # With the rotation's draws replaced by 0 the warp is exactly the drawn flips (nearest sampling).
    flips = DeviceTransform("flip_rot20", size, MEAN, STD)
    flips.augment.geometric["rotation"].forward_parameters = lambda shape: {
        **p["rotation"], "degrees": torch.zeros(n)}
    y = flips(x, seed=3)
    h, v = (flips.augment.params[k]["batch_prob"].bool() for k in ("hflip", "vflip"))
    expect = normalised(x, MEAN, STD)
    expect[h] = expect[h].flip(-1)
    expect[v] = expect[v].flip(-2)
    torch.testing.assert_close(y, expect)
    assert h.any() and (~h).any()


@pytest.mark.parametrize("step, tv", [
    (0, "adjust_brightness"), (1, "adjust_contrast"), (2, "adjust_saturation"), (3, "adjust_hue")])
def test_colour_jitter_uses_torchvisions_formulas_per_sample(step, tv):
    from torchvision.transforms.v2 import functional as TF

    x = uint8_batch(4, 8).permute(0, 3, 1, 2).float() / 255
    factors = torch.tensor([0.7, 0.9, 1.1, 1.3]) if step < 3 else torch.tensor([-0.1, -0.03, 0.02, 0.1])
    names = ("brightness", "contrast", "saturation", "hue")
    params = {f"{k}_factor": (factors if i == step else torch.full((4,), 0.0 if k == "hue" else 1.0))
              for i, k in enumerate(names)}
    y = colour_jitter(x, {**params, "order": torch.tensor([step])})
    expect = torch.stack([getattr(TF, tv)(x[i], float(factors[i])) for i in range(4)])
    torch.testing.assert_close(y, expect, atol=1e-5, rtol=0)
