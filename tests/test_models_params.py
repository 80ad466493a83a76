"""Parameter counts against the papers' tables (within 0.5 %), counted on the meta device."""
import pytest

from attnsweep.models import VARIANTS, count_params, describe_variants

# (variant, classes, image size, the paper's count in millions, where it is printed)
P002 = [  # paper 002, Table 1: 3 classes (nevus, melanoma, other), 224 px; the ViT row excluded
    ("resnet18", 11.18), ("resnet18+ga", 11.22), ("resnet18+la", 5.67), ("resnet18+ga+la", 5.71),
    ("resnet18+ela", 14.98), ("resnet18+ga+ela", 15.02),
    ("efficientnet_b0", 4.01), ("efficientnet_b0+ga", 4.02), ("efficientnet_b0+la", 3.48),
    ("efficientnet_b0+ga+la", 3.48), ("efficientnet_b0+ela", 4.30), ("efficientnet_b0+ga+ela", 4.30),
]
P000_I = [  # paper 000, Table I: HAM10000, 7 classes, 224 px; the AA rows excluded (not binding)
    ("resnet34", 21.28), ("resnet34+se", 21.45), ("resnet34+cbam", 21.45), ("resnet34+eca", 21.28),
    ("resnet34+ta", 21.29),
    ("resnet50", 23.52), ("resnet50+se", 26.05), ("resnet50+cbam", 26.05), ("resnet50+eca", 23.52),
    ("resnet50+ta", 23.52),
    ("resnet101", 42.50), ("resnet101+se", 47.29), ("resnet101+cbam", 47.29), ("resnet101+eca", 42.51),
    ("resnet101+ta", 42.52),
]
P000_III = [  # paper 000, Table III: 7 classes, 224 px
    ("resnet152", 58.15), ("vit_tiny_patch16_224", 5.53), ("vit_small_patch16_224", 21.67),
    ("vit_base_patch16_224", 85.80), ("vit_large_patch16_224", 303.31), ("deit_tiny_patch16_224", 5.53),
    ("deit_small_patch16_224", 21.67), ("deit_base_patch16_224", 85.80), ("convit_tiny", 5.52),
    ("convit_small", 27.35), ("convit_base", 85.77),
]
P004 = [  # paper 004, Table 1: CIFAR-10, 10 classes, 32 px
    ("cnn2", 2.62), ("cnn2+eca", 2.62), ("cnn2+cbam", 2.63), ("cnn3", 3.51), ("cnn2+ae_conv", 2.92),
    ("cnn2+ae_conv+eca", 2.92), ("cnn2+ae_linear", 2.72), ("cnn2+ae_linear+eca", 2.72), ("cnn2+cbam_spatial+eca", 2.63),
]
TABLE = (
    [(n, 3, 224, m, "002 T1") for n, m in P002]
    + [(n, 7, 224, m, "000 T I") for n, m in P000_I]
    + [(n, 7, 224, m, "000 T III") for n, m in P000_III]
    + [(n, 10, 32, m, "004 T1") for n, m in P004]
)


@pytest.mark.parametrize("name,classes,size,paper_m,source", TABLE, ids=[f"{r[4]}:{r[0]}" for r in TABLE])
def test_count_matches_paper(name, classes, size, paper_m, source):
    ours = count_params(name, classes, size)
    assert abs(ours / (paper_m * 1e6) - 1) <= 0.005, f"{name}: {ours:,} vs {paper_m} M ({source})"


def test_every_table_row_is_a_registered_variant():
    assert {row[0] for row in TABLE} <= set(VARIANTS)


def test_attention_changes_the_count_the_way_the_module_does():
    # GA adds Wang et al.'s C/2 bottleneck after ResNet-18's 64- and 128-channel stages:
    # theta, phi, g (C*C/2 + C/2 each), W (C/2*C + C) and its BN (2C)
    ga = sum(3 * (c * c // 2 + c // 2) + (c // 2 * c + c) + 2 * c for c in (64, 128))
    assert count_params("resnet18+ga", 3) - count_params("resnet18", 3) == ga
    # AA's relative embeddings are sized for the input: a larger image has more parameters
    assert count_params("resnet50+aa", 7, 224) > count_params("resnet50+aa", 7, 64)
    assert count_params("resnet50", 7, 224) == count_params("resnet50", 7, 64)


@pytest.mark.slow
def test_describe_variants_lists_every_variant_in_order():
    rows = describe_variants(3)
    assert [r["name"] for r in rows] == VARIANTS
    assert len(set(VARIANTS)) == len(VARIANTS)
    for r in rows:
        assert set(r) == {"name", "backbone", "attention", "params"}
        assert "+".join([r["backbone"], *r["attention"]]) == r["name"]
    by_name = {r["name"]: r["params"] for r in rows}
    assert by_name["cnn2"] == count_params("cnn2", 3, 32)  # the CNNs at CIFAR's 32 px
    assert by_name["resnet18+ga"] == count_params("resnet18+ga", 3, 224)
    assert describe_variants(5)[0]["params"] - by_name["resnet18"] == 2 * 513  # two more fc outputs
