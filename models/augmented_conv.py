"""Attention-augmented convolution (Bello et al. 2019), written here because timm has none:
concat[conv(x) with F_out - d_v channels, MHA(x) with d_v channels] where MHA is multi-head
self-attention over all positions with 2-D relative position logits."""
from __future__ import annotations

import torch
from torch import nn

AA_HEADS = 8  # Bello et al.'s ResNet setting: N_h = 8, kappa = 2 upsilon = 0.2,
AA_KAPPA = 0.2  # d_k = kappa * F_out,
AA_UPSILON = 0.1  # d_v = upsilon * F_out,
AA_MIN_KEY_DEPTH = 20  # and at least 20 key dimensions per head


def aa_depths(out_channels: int, heads: int = AA_HEADS) -> tuple[int, int]:
    """(d_k, d_v), both multiples of `heads`."""
    dk = heads * max(AA_MIN_KEY_DEPTH, round(AA_KAPPA * out_channels / heads))
    dv = heads * max(1, round(AA_UPSILON * out_channels / heads))
    return dk, dv


class AttentionAugmentedConv(nn.Module):
    """`feature_size` is the (H, W) of the output: the relative embeddings (2H-1 and 2W-1 rows,
    shared across heads as in Bello et al.) are sized for it, so the model is built for one input
    size. A stride-2 conv gets its attention on the 2x2-average-pooled input."""

    def __init__(self, in_channels: int, out_channels: int, feature_size: tuple[int, int],
                 kernel_size: int = 3, stride: int = 1, heads: int = AA_HEADS):
        super().__init__()
        self.dk, self.dv = aa_depths(out_channels, heads)
        if self.dv >= out_channels:
            raise ValueError(f"AttentionAugmentedConv: d_v={self.dv} leaves no conv channels of {out_channels}")
        self.heads, self.feature_size = heads, tuple(feature_size)
        self.conv = nn.Conv2d(in_channels, out_channels - self.dv, kernel_size, stride, kernel_size // 2, bias=False)
        self.pool = nn.AvgPool2d(stride, stride, ceil_mode=True) if stride > 1 else nn.Identity()
        self.qkv = nn.Conv2d(in_channels, 2 * self.dk + self.dv, 1, bias=False)
        self.attn_out = nn.Conv2d(self.dv, self.dv, 1, bias=False)
        h, w = self.feature_size
        self.rel_h = nn.Parameter(torch.empty(2 * h - 1, self.dk // heads))
        self.rel_w = nn.Parameter(torch.empty(2 * w - 1, self.dk // heads))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for conv in (self.conv, self.qkv, self.attn_out):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.normal_(self.rel_h, std=(self.dk // self.heads) ** -0.5)
        nn.init.normal_(self.rel_w, std=(self.dk // self.heads) ** -0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv_out = self.conv(x)
        x = self.pool(x)
        b, _, h, w = x.shape
        if (h, w) != self.feature_size:
            raise ValueError(f"AttentionAugmentedConv built for {self.feature_size} maps got {(h, w)}: "
                             "create the model with the image_size it is fed")
        heads, dkh = self.heads, self.dk // self.heads
        q, k, v = self.qkv(x).split([self.dk, self.dk, self.dv], dim=1)
        q = q.reshape(b, heads, dkh, h, w) * dkh ** -0.5
        k = k.reshape(b, heads, dkh, h, w)
        v = v.reshape(b, heads, self.dv // heads, h * w)
        logits = torch.einsum("bndij,bndxy->bnijxy", q, k)
        # relative logits: query row i against key row x uses rel_h[x - i + H - 1]; columns alike
        rows = torch.arange(h, device=x.device)
        cols = torch.arange(w, device=x.device)
        rel_h = self.rel_h[rows[None, :] - rows[:, None] + h - 1]  # (H_i, H_x, dkh)
        rel_w = self.rel_w[cols[None, :] - cols[:, None] + w - 1]  # (W_j, W_y, dkh)
        logits = logits + torch.einsum("bndij,ixd->bnijx", q, rel_h)[..., None]
        logits = logits + torch.einsum("bndij,jyd->bnijy", q, rel_w)[..., None, :]
        attn = logits.reshape(b, heads, h * w, h * w).softmax(dim=-1)
        out = torch.einsum("bnqk,bndk->bndq", attn, v).reshape(b, self.dv, h, w)
        return torch.cat([conv_out, self.attn_out(out)], dim=1)
