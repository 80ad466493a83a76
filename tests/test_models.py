"""Every variant trains (forward + backward), names are checked, GA maps and Grad-CAM layers are
where the explanation code expects them."""
import re

import pytest
import torch
from torch import nn

from attnsweep.models import (
    BACKBONES, VARIANTS, capture_ga_maps, count_params, create, gradcam_target_layer, parse_name,
)

# Above this (ResNet-50 and up, the larger transformers) forward/backward runs on the meta device:
# shapes and autograd graph only; the same modules run for real in the smaller backbones.
BIG = 22e6


def _size(name: str) -> int:
    # patch-16 transformers: a 2x2 patch grid; CNN families: 64 px leaves a 2x2 map at ResNet's last stage
    return 32 if BACKBONES[parse_name(name)[0]].family == "transformer" else 64


@pytest.mark.parametrize("name", VARIANTS)
def test_forward_backward(name):
    torch.manual_seed(0)
    size = _size(name)
    device = "meta" if count_params(name, 3, size) > BIG else "cpu"
    with torch.device(device):
        model = create(name, num_classes=3, image_size=size)
        x = torch.randn(2, 3, size, size)
    out = model.train()(x)
    assert out.shape == (2, 3)
    out.logsumexp(dim=1).sum().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    if device == "cpu":
        assert torch.isfinite(out).all()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name,problem", [
    ("resnet19", "backbone 'resnet19'"),
    ("resnet18+xa", "attention 'xa'"),
    ("ResNet18", "backbone 'ResNet18'"),
])
def test_unknown_name_lists_what_is_valid(name, problem):
    with pytest.raises(ValueError) as err:
        parse_name(name)
    msg = str(err.value)
    assert problem in msg and "\n" not in msg
    for valid in ("resnet18", "efficientnet_b0", "vit_tiny_patch16_224", "cnn2", "ga", "ela", "ae_linear"):
        assert valid in msg


@pytest.mark.parametrize("name,problem", [
    ("efficientnet_b0+aa", "not defined for efficientnet_b0"),
    ("vit_tiny_patch16_224+se", "not defined for vit_tiny_patch16_224"),
    ("resnet18+la+ela", "use one"),
    ("resnet18+ga+se+eca", "at most 2"),
    ("resnet18+ga+ga", "at most 2"),
    ("resnet18+ela+ga", "'resnet18+ga+ela'"),
    ("cnn2+eca+ae_conv", "'cnn2+ae_conv+eca'"),
])
def test_invalid_combination(name, problem):
    with pytest.raises(ValueError, match=re.escape(problem)):
        create(name, num_classes=3)


def test_parse_name():
    assert parse_name("resnet18+ga+ela") == ("resnet18", ["ga", "ela"])
    assert parse_name("cnn2+cbam_spatial+eca") == ("cnn2", ["cbam_spatial", "eca"])
    assert parse_name("convit_small") == ("convit_small", [])


def test_ga_maps_are_softmax_maps_per_query():
    torch.manual_seed(0)
    model = create("resnet18+ga", num_classes=3, image_size=64).eval()
    with torch.no_grad(), capture_ga_maps(model) as maps:
        model(torch.randn(2, 3, 64, 64))
    # after stage 1 (64 px / 4 = 16) and stage 2 (8), one (B, H, W, H, W) map each
    assert {k: tuple(v.shape) for k, v in maps.items()} == {
        "layer1.2": (2, 16, 16, 16, 16), "layer2.2": (2, 8, 8, 8, 8)}
    for m in maps.values():
        torch.testing.assert_close(m.sum(dim=(3, 4)), torch.ones(m.shape[:3]))
    model(torch.randn(1, 3, 64, 64))  # the hooks are gone after the block
    assert maps["layer1.2"].shape[0] == 2


def test_ga_maps_need_a_ga_model():
    with pytest.raises(ValueError, match="no GA module"):
        with capture_ga_maps(create("resnet18+ela", num_classes=3)):
            pass


@pytest.mark.parametrize("name,channels", [
    ("resnet18", 512), ("resnet18+la", 512), ("efficientnet_b0+ela", 320), ("cnn2+ae_conv", 128)])
def test_gradcam_target_is_the_last_conv_feature_map(name, channels):
    model = create(name, num_classes=3, image_size=64).eval()
    seen = []
    handle = gradcam_target_layer(model).register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    handle.remove()
    assert len(seen) == 1 and len(seen[0]) == 4 and seen[0][1] == channels


def test_aa_is_built_for_one_input_size():
    model = create("resnet34+aa", num_classes=3, image_size=64)
    with pytest.raises(ValueError, match="image_size"):
        model(torch.randn(1, 3, 96, 96))


def test_zero_initialised_outputs_survive_timm_init():
    # timm's ResNet init_weights re-initialises convs: the modules are patched in after it
    model = create("resnet18+ga+ela", num_classes=3)
    zeros = [model.layer1[2].norm.weight, model.layer2[2].norm.weight,
             *(getattr(b, c).proj.weight for b in model.layer4 for c in ("conv1", "conv2"))]
    assert all(torch.count_nonzero(t) == 0 for t in zeros)
    assert isinstance(model.layer4[0].downsample[0], nn.Conv2d)  # the 1x1 shortcut is kept


@pytest.mark.parametrize("name,device", [
    ("resnet18+ae_linear", "cpu"), ("resnet18+cbam_spatial+se", "cpu"), ("resnet18+ga+aa", "cpu"),
    ("resnet50+ga+ela", "meta"), ("cnn3+ta", "cpu"),
])
def test_unregistered_combinations_build_too(name, device):
    with torch.device(device):
        model = create(name, num_classes=3, image_size=64)
        x = torch.randn(2, 3, 64, 64)
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("size", [28, 32])
@pytest.mark.parametrize("name", VARIANTS)
def test_every_variant_trains_a_step_on_small_images(name, size):
    """MedMNIST's 28 px and CIFAR's 32 px, the papers' own sizes: built (the attention sizes come
    from a probe forward, which at a 1x1 last stage must not trip BatchNorm) and one SGD step."""
    device = "meta" if count_params(name, 3, size) > BIG else "cpu"
    with torch.device(device):
        model = create(name, num_classes=3, image_size=size)
        x = torch.randn(2, 3, size, size)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    before = next(model.parameters()).detach().clone()
    model.train()(x).logsumexp(dim=1).sum().backward()
    optimizer.step()
    if device == "cpu":
        assert not torch.equal(before, next(model.parameters()))


def _last_stage_size(model: nn.Module, size: int) -> tuple[int, int]:
    shapes = []
    handle = gradcam_target_layer(model).register_forward_hook(lambda _m, _i, out: shapes.append(out.shape[-2:]))
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, size, size))
    handle.remove()
    return tuple(shapes[0])


@pytest.mark.parametrize("name", ["resnet18", "resnet18+se", "resnet18+aa", "resnet18+ga+ela"])
def test_small_stem_keeps_a_4x4_last_stage_at_28_px(name):
    """timm's ImageNet stem (7x7 stride 2 + max-pool) leaves a 1x1 last stage at 28 px: one
    Grad-CAM value per image. The small stem (3x3 stride 1, no max-pool) leaves 4x4."""
    assert _last_stage_size(create(name, num_classes=3, image_size=28), 28) == (1, 1)
    small = create(name, num_classes=3, image_size=28, stem="small")
    assert (small.conv1.kernel_size, small.conv1.stride, type(small.maxpool)) == ((3, 3), (1, 1), nn.Identity)
    assert _last_stage_size(small, 28) == (4, 4)
    small.train()(torch.randn(2, 3, 28, 28)).sum().backward()


def test_small_stem_is_for_resnets_only():
    with pytest.raises(ValueError, match=r"^stem: 'small' is for ResNets; cnn2 is of the cnn family$"):
        create("cnn2", num_classes=3, image_size=32, stem="small")
