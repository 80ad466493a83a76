"""Explanation maps on real models of the zoo: Grad-CAM and GA maps for the demo study's variants
(and the ViT attention) have the input's spatial size, are normalised to 0..255 and depend on the
image; the GA map is the query-averaged attention of the deepest GA block."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attnsweep.models import capture_ga_maps, create, parse_name
from attnsweep.pipelines.report.explain import ga_maps, methods_for, normalise, vit_attention_maps
from attnsweep.pipelines.config.study import load_study

DEMO = load_study(Path(__file__).parents[1] / "studies" / "demo.yaml")
SIZE = 64  # the demo trains at 32 px; 64 keeps ResNet's last stage 2x2 so Grad-CAM has a shape


def images(n=4, size=SIZE):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, size, size, generator=g)


@pytest.mark.parametrize("variant", DEMO.variants)
def test_demo_variants_get_maps_of_the_input_size(variant):
    torch.manual_seed(0)
    model = create(variant, num_classes=3, image_size=SIZE)
    methods = methods_for(model, parse_name(variant)[1])
    assert "Grad-CAM" in methods
    assert ("GA map" in methods) == ("ga" in parse_name(variant)[1])
    x = images()
    for method, fn in methods.items():
        maps = fn(model, x)
        assert maps.shape == (4, SIZE, SIZE), method
        assert np.isfinite(maps).all()
        scaled = normalise(maps)
        assert scaled.dtype == np.uint8 and scaled.shape == maps.shape
        flat = scaled.reshape(4, -1)
        # Grad-CAM's ReLU may zero a whole map of an untrained model; any other map spans 0..255
        spread = flat.max(1) > 0
        assert spread.sum() >= 2, method
        assert (flat[spread].max(1) == 255).all() and (flat.min(1) == 0).all()
        a, b = np.flatnonzero(spread)[:2]
        assert not np.array_equal(maps[a], maps[b]), f"{method}: the map ignores the image"


def test_ga_map_is_the_query_averaged_attention_of_the_deepest_block():
    torch.manual_seed(0)
    model = create("resnet18+ga", num_classes=3, image_size=SIZE).eval()
    x = images(2)
    with torch.no_grad(), capture_ga_maps(model) as maps:
        model(x)
    deepest = list(maps.values())[-1]  # (B, H, W, H, W)
    b, h, w = deepest.shape[:3]
    native = deepest.mean(dim=(1, 2))
    # each query's softmax sums to 1 over the keys, so the averaged map does too
    torch.testing.assert_close(native.sum(dim=(1, 2)), torch.ones(b))
    want = F.interpolate(native[:, None], size=(SIZE, SIZE), mode="bilinear", align_corners=False)[:, 0]
    np.testing.assert_allclose(ga_maps(model, x), want.numpy(), rtol=1e-5, atol=1e-7)


def test_vit_attention_is_the_cls_row_of_the_last_block():
    torch.manual_seed(0)
    model = create("vit_tiny_patch16_224", num_classes=3, image_size=SIZE).eval()
    assert list(methods_for(model, [])) == ["ViT attention"]
    maps = vit_attention_maps(model, images(2))
    assert maps.shape == (2, SIZE, SIZE)
    # CLS attention over the 16 patches is a part of a softmax row: positive, summing to <= 1
    patches = F.avg_pool2d(torch.from_numpy(maps)[:, None], SIZE // 4)[:, 0]
    assert (patches > 0).all() and (patches.sum(dim=(1, 2)) <= 1 + 1e-5).all()


def test_normalise_edge_cases():
    assert normalise(np.full((2, 3, 3), 0.5)).max() == 0  # a constant map carries no location
    m = normalise(np.array([[[0.0, 1.0], [2.0, 4.0]]]))
    assert m.tolist() == [[[0, 64], [128, 255]]]
