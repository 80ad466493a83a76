"""attnsweep.data: dataset adapters, the synthetic `synthderm` set, leakage-safe split manifests,
the decoded image cache and the training transforms. The interface (docs/interfaces.md):

    spec = DatasetSpec.parse("synthderm")               # or DatasetSpec(format=..., root=..., ...)
    data_dir = prepare(spec, SplitSpec(), 64, out_dir)  # manifests + caches, once per study
    split = load_split(data_dir, "search-0")            # class_names, sets, mean, std
    ds = make_dataset(split.sets["train"], "flip_rot20", split.mean, split.std, train=True, seed=0)

torch is imported only by `make_dataset` (so `attnsweep data check` stays fast)."""
from __future__ import annotations

from attnsweep.data.errors import DataError
from attnsweep.data.prepare import ImageSet, SplitData, load_split, prepare
from attnsweep.data.spec import DatasetSpec, SplitSpec


def make_dataset(image_set, preset, mean, std, train, seed):
    """See `attnsweep.data.transforms.make_dataset`."""
    from attnsweep.data.transforms import make_dataset as _make

    return _make(image_set, preset, mean, std, train, seed)


__all__ = ["DataError", "DatasetSpec", "ImageSet", "SplitData", "SplitSpec", "load_split", "make_dataset",
           "prepare"]
