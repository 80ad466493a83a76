"""synthderm is learnable at 32 px, and not trivially: a small CNN trained for a few epochs is well
above chance (1/3 balanced accuracy) in distribution and drops on the OOD variant."""
from __future__ import annotations

import pytest
import torch
from sklearn.metrics import balanced_accuracy_score
from torch import nn

from attnsweep.data import DatasetSpec, SplitSpec, load_split, make_dataset, prepare


def small_cnn() -> nn.Module:
    def block(i: int, o: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(),
                             nn.Conv2d(o, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))
    return nn.Sequential(block(3, 16), block(16, 32), block(32, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(64, 3))


def tensors(image_set, split) -> torch.Tensor:
    ds = make_dataset(image_set, "none", split.mean, split.std, train=False, seed=0)
    return torch.stack([ds[i][0] for i in range(len(ds))])


@pytest.mark.slow
def test_small_cnn_learns_synthderm_at_32px(tmp_path):
    torch.manual_seed(0)
    shifted = DatasetSpec(format="synthderm", options={"n": 400, "ood": True})
    data_dir = prepare(DatasetSpec(format="synthderm", options={"n": 1200}),
                       SplitSpec(search_splits=1, repeat_splits=0), 32, tmp_path, ood={"shifted": shifted})
    split = load_split(data_dir, "search-0")
    x, y = tensors(split.sets["train"], split), torch.as_tensor(split.sets["train"].labels)
    model, epochs, batch = small_cnn(), 5, 64
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=epochs * (len(x) // batch))
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for b in range(len(x) // batch):
            i = order[b * batch:(b + 1) * batch]
            loss = nn.functional.cross_entropy(model(x[i]), y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        predict = {k: model(tensors(split.sets[k], split)).argmax(1).numpy() for k in ("test", "ood:shifted")}
    score = {k: balanced_accuracy_score(split.sets[k].labels, p) for k, p in predict.items()}
    print(f"small CNN, 32 px, {epochs} epochs: balanced accuracy {score}")
    assert score["test"] > 0.55  # chance is 0.33; the label noise caps it near 0.9
    assert score["ood:shifted"] < score["test"]
