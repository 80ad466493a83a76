"""Paper 002's local attentions: LA (stand-alone local self-attention, Ramachandran et al. 2019) and
ELA (LA in a zero-initialised residual branch around the original convolution(s)).

Written here because timm has no stand-alone local self-attention (HaloAttn is the blocked
variant, with other parameters and other neighbourhoods).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LA_KERNEL_SIZE = 7  # Ramachandran et al.'s spatial extent k
LA_HEADS = 8  # and their number of heads


class LocalSelfAttention(nn.Module):
    """Each output pixel attends over its k x k neighbourhood: softmax(q·(k + r)) v with 1x1
    query/key/value convs and learned row/column offset embeddings r (half the head depth each).

    A strided convolution it replaces becomes attention at the input resolution followed by
    2x2 average pooling, as in Ramachandran et al. Outside-the-image neighbours are masked.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = LA_KERNEL_SIZE,
                 heads: int = LA_HEADS, stride: int = 1):
        super().__init__()
        if out_channels % heads:
            raise ValueError(f"LocalSelfAttention: out_channels={out_channels} is not divisible by heads={heads}")
        self.kernel_size, self.heads = kernel_size, heads
        self.q = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.k = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.v = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        depth = out_channels // heads
        self.rel_h = nn.Parameter(torch.empty(heads, depth // 2, kernel_size))
        self.rel_w = nn.Parameter(torch.empty(heads, depth - depth // 2, kernel_size))
        self.pool = nn.AvgPool2d(stride, stride, ceil_mode=True) if stride > 1 else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for conv in (self.q, self.k, self.v):
            nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="linear")
        nn.init.trunc_normal_(self.rel_h, std=0.02)
        nn.init.trunc_normal_(self.rel_w, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        ks, heads, pad = self.kernel_size, self.heads, self.kernel_size // 2
        q = self.q(x).reshape(b, heads, -1, h * w)
        depth = q.shape[2]
        # unfold: (B, C*k*k, H*W), channel-major, window index = row offset * k + column offset
        keys = F.unfold(self.k(x), ks, padding=pad).reshape(b, heads, depth, ks * ks, h * w)
        values = F.unfold(self.v(x), ks, padding=pad).reshape(b, heads, depth, ks * ks, h * w)
        rel = torch.cat([
            self.rel_h[:, :, :, None].expand(-1, -1, ks, ks),
            self.rel_w[:, :, None, :].expand(-1, -1, ks, ks),
        ], dim=1).reshape(heads, depth, ks * ks)
        logits = torch.einsum("bhdl,bhdkl->bhkl", q, keys + rel[None, :, :, :, None]) * depth ** -0.5
        inside = F.unfold(x.new_ones(1, 1, h, w), ks, padding=pad).bool()  # (1, k*k, H*W)
        attn = logits.masked_fill(~inside[:, None], float("-inf")).softmax(dim=2)
        out = torch.einsum("bhkl,bhdkl->bhdl", attn, values).reshape(b, heads * depth, h, w)
        return self.pool(out)


class EmbeddedLocalAttention(nn.Module):
    """ELA: inner(x) + proj(LA(x)) with proj a zero-initialised 1x1 conv, so the module equals the
    wrapped (pre-trained) convolution or block at initialisation.

    A plain backbone checkpoint names the wrapped module's tensors without `inner.`; the load
    pre-hook maps them, so the backbone's weights load into the ELA model unchanged.
    """

    def __init__(self, in_channels: int, out_channels: int, inner: nn.Module, stride: int = 1,
                 kernel_size: int = LA_KERNEL_SIZE, heads: int = LA_HEADS):
        super().__init__()
        self.inner = inner
        self.la = LocalSelfAttention(in_channels, out_channels, kernel_size, heads, stride)
        self.proj = nn.Conv2d(out_channels, out_channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.register_load_state_dict_pre_hook(_inner_keys_from_plain_checkpoint)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) + self.proj(self.la(x))


def _inner_keys_from_plain_checkpoint(module, state_dict, prefix, *_):
    own = ("inner.", "la.", "proj.")
    for key in [k for k in state_dict if k.startswith(prefix) and not k[len(prefix):].startswith(own)]:
        state_dict[prefix + "inner." + key[len(prefix):]] = state_dict.pop(key)
