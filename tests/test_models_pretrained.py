"""Pre-trained weights through the real loading code: a random state dict of the plain backbone,
saved to a file (or to a Hugging Face cache layout), stands in for the ImageNet weights."""
import huggingface_hub
import pytest
import safetensors.torch
import torch

from attnsweep.models import create
from attnsweep.models.global_attention import GlobalSelfAttention
from attnsweep.models.local_attention import EmbeddedLocalAttention

SIZE = 64


def random_weights(backbone: str, num_classes: int, path, seed: int = 0):
    """A freshly initialised plain backbone (its own seed) with every norm layer's affine parameters
    and running statistics redrawn too, so no block starts as timm's zero-init identity; saved."""
    torch.manual_seed(seed)
    state = create(backbone, num_classes).state_dict()
    gen = torch.Generator().manual_seed(seed)
    for key, value in state.items():
        noise = torch.randn(value.shape, generator=gen) * 0.1
        if key.endswith("running_var"):
            state[key] = 1 + noise.abs()
        elif key.endswith(("running_mean", "bn1.bias", "bn2.bias", "bn3.bias")):
            state[key] = noise
        elif key.endswith(("bn1.weight", "bn2.weight", "bn3.weight")):
            state[key] = 1 + noise
    if str(path).endswith(".safetensors"):
        safetensors.torch.save_file(state, str(path))
    else:
        torch.save(state, path)
    return state


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    resnet, effnet = folder / "resnet18.pth", folder / "efficientnet_b0.safetensors"
    random_weights("resnet18", 3, resnet)
    random_weights("efficientnet_b0", 3, effnet)
    return {"resnet18": resnet, "efficientnet_b0": effnet}


@pytest.mark.parametrize("name", ["resnet18+ga", "resnet18+ela", "resnet18+ga+ela", "efficientnet_b0+ga"])
def test_identity_at_initialisation(name, weights):
    backbone = name.split("+")[0]
    torch.manual_seed(0)
    plain = create(backbone, 3, pretrained=str(weights[backbone]), image_size=SIZE)
    variant = create(name, 3, pretrained=str(weights[backbone]), image_size=SIZE)
    x = torch.randn(4, 3, SIZE, SIZE) * torch.tensor([0.5, 1.0, 2.0, 4.0]).view(4, 1, 1, 1)
    with torch.no_grad():
        for mode in ("eval", "train"):  # train: batch statistics, as in the first training step
            want = getattr(plain, mode)()(x)
            torch.testing.assert_close(getattr(variant, mode)()(x), want, rtol=1e-4, atol=1e-5)
        # the zero-initialised outputs are what makes it so: give them weights and the output moves
        for module in variant.modules():
            if isinstance(module, GlobalSelfAttention):
                module.norm.weight.fill_(1.0)
            if isinstance(module, EmbeddedLocalAttention):
                module.proj.weight.normal_()
        assert not torch.allclose(variant(x), want, rtol=1e-4, atol=1e-5)
    report = variant.pretrained_report
    assert report.unused == [] and report.skipped_head == []
    assert report.new and all(k.split(".")[0] in ("layer1", "layer2", "layer4", "blocks") for k in report.new)
    assert report.loaded == len(plain.state_dict())  # every backbone tensor came from the file


def test_la_replaces_the_pretrained_convs(weights):
    torch.manual_seed(0)
    plain = create("resnet18", 3, pretrained=str(weights["resnet18"]), image_size=SIZE).eval()
    la = create("resnet18+la", 3, pretrained=str(weights["resnet18"]), image_size=SIZE).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert not torch.allclose(la(x), plain(x), atol=1e-2)
    # the four 3x3 convs of the last stage are not in the model any more; their LA replacements are new
    assert sorted(la.pretrained_report.unused) == [f"layer4.{b}.conv{c}.weight" for b in (0, 1) for c in (1, 2)]
    assert {".".join(k.split(".")[:3]) for k in la.pretrained_report.new} == {
        f"layer4.{b}.conv{c}" for b in (0, 1) for c in (1, 2)}


def test_ela_model_reloads_its_own_state_dict_strictly():
    model = create("resnet18+ela", 3)
    again = create("resnet18+ela", 3)
    again.load_state_dict(model.state_dict(), strict=True)
    torch.testing.assert_close(again.layer4[0].conv1.inner.weight, model.layer4[0].conv1.inner.weight)


def test_head_of_another_class_count_is_skipped(tmp_path):
    path = tmp_path / "resnet18_1000.pth"
    random_weights("resnet18", 1000, path)
    model = create("resnet18+se", 5, pretrained=str(path))
    assert sorted(model.pretrained_report.skipped_head) == ["fc.bias", "fc.weight"]
    assert not any(k.startswith("fc.") for k in model.pretrained_report.new)
    assert model.fc.out_features == 5


def test_hugging_face_cache_is_read_offline(tmp_path, monkeypatch):
    # timm's hub layout for resnet18's torchvision weights, as `hf download timm/resnet18.tv_in1k` leaves it
    repo = tmp_path / "models--timm--resnet18.tv_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    (repo / "snapshots" / "0123abcd").mkdir(parents=True)
    state = random_weights("resnet18", 1000, repo / "snapshots" / "0123abcd" / "model.safetensors")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    model = create("resnet18+ga", 3, pretrained="imagenet-1k")
    torch.testing.assert_close(model.conv1.weight, state["conv1.weight"])
    assert sorted(model.pretrained_report.skipped_head) == ["fc.bias", "fc.weight"]


def test_missing_weights_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        create("vit_tiny_patch16_224", 3, pretrained="imagenet-21k")
    msg = str(err.value)
    for hint in ("timm/vit_tiny_patch16_224.augreg_in21k", str(tmp_path), "HF_HUB_OFFLINE=1", "file"):
        assert hint in msg
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create("resnet18", 3, pretrained=str(tmp_path / "nope.pth"))
    with pytest.raises(ValueError, match="no imagenet-21k weights are defined for resnet18"):
        create("resnet18", 3, pretrained="imagenet-21k")
    with pytest.raises(ValueError, match="no imagenet-1k weights are defined for cnn2"):
        create("cnn2", 3, pretrained="imagenet-1k")


def test_wrong_weights_are_refused(tmp_path, weights):
    with pytest.raises(ValueError, match=r"layer1\.0\.conv1\.weight has shape"):
        create("resnet50", 3, pretrained=str(weights["resnet18"]))  # same names, other shapes
    with pytest.raises(ValueError, match="only 2 of its 122 tensors fit cnn2"):
        create("cnn2", 3, pretrained=str(weights["resnet18"]))  # only `fc` has the same name and shape
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pth: cannot read weights"):
        create("resnet18", 3, pretrained=str(garbage))
    pickled = tmp_path / "pickled.pth"
    torch.save({"weights": [1, 2]}, pickled)
    with pytest.raises(ValueError, match="not a state dict"):
        create("resnet18", 3, pretrained=str(pickled))
