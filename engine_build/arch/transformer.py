"""The guided Restormer of HI-Diff with its hierarchical integration module
(HIM). Structure, names and shapes follow the official `Transformer`.

Export notes: layer norm is F.layer_norm (an ONNX LayerNormalization node at
opset 17, which TensorRT can keep in FP32), and every reshape takes its sizes
from the input so H and W stay dynamic in the graph.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .ops import PixelShuffle, PixelUnshuffle, Transpose12


class BiasFreeLayerNorm(nn.Module):
    """x / sqrt(var + eps) * w over the last dim (no mean subtraction, so no
    LayerNormalization node; no released preset uses it)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sigma = x.var(-1, keepdim=True, unbiased=False)
        return x / torch.sqrt(sigma + 1e-5) * self.weight


class WithBiasLayerNorm(nn.Module):
    """Restormer's WithBias_LayerNorm; identical to F.layer_norm(eps=1e-5)."""

    eps = 1e-5

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (self.dim,), self.weight, self.bias, self.eps)


def _norm_body(dim: int, kind: str) -> nn.Module:
    if kind == "BiasFree":
        return BiasFreeLayerNorm(dim)
    if kind == "WithBias":
        return WithBiasLayerNorm(dim)
    raise ValueError(f"LayerNorm_type {kind!r}: expected 'WithBias' or 'BiasFree'")


class LayerNorm(nn.Module):
    """Layer norm over channels of an NCHW map."""

    def __init__(self, dim: int, kind: str) -> None:
        super().__init__()
        self.body = _norm_body(dim, kind)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class LayerNormTokens(nn.Module):
    """Official LayerNorm_Without_Shape: layer norm over the last dim of tokens."""

    def __init__(self, dim: int, kind: str) -> None:
        super().__init__()
        self.body = _norm_body(dim, kind)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _modulate(x: torch.Tensor, ln1: nn.Linear, ln2: nn.Linear, prior: torch.Tensor) -> torch.Tensor:
    """x * ln1(prior) + ln2(prior), the prior [b, C] broadcast over pixels."""
    k1 = ln1(prior).unsqueeze(-1).unsqueeze(-1)
    k2 = ln2(prior).unsqueeze(-1).unsqueeze(-1)
    return x * k1 + k2


class FeedForward(nn.Module):
    """Gated-Dconv feed-forward network (GDFN)."""

    def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool, embed_dim: int, group: int) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, kernel_size=3, stride=1, padding=1,
                                groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=bias)
        if group == 1:
            self.ln1 = nn.Linear(embed_dim * 4, dim)
            self.ln2 = nn.Linear(embed_dim * 4, dim)

    def forward(self, x: torch.Tensor, prior: Optional[torch.Tensor] = None) -> torch.Tensor:
        if prior is not None:
            x = _modulate(x, self.ln1, self.ln2, prior)
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


class Attention(nn.Module):
    """Multi-Dconv head transposed self-attention (MDTA): attention across
    channels, so its cost is linear in the number of pixels."""

    def __init__(self, dim: int, num_heads: int, bias: bool, embed_dim: int, group: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, kernel_size=3, stride=1, padding=1,
                                    groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)
        if group == 1:
            self.ln1 = nn.Linear(embed_dim * 4, dim)
            self.ln2 = nn.Linear(embed_dim * 4, dim)

    def forward(self, x: torch.Tensor, prior: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, c, h, w = x.shape
        if prior is not None:
            x = _modulate(x, self.ln1, self.ln2, prior)
        q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        heads = self.num_heads
        q = q.reshape(b, heads, c // heads, -1)
        k = k.reshape(b, heads, c // heads, -1)
        v = v.reshape(b, heads, c // heads, -1)
        # The L2 norms sum over all H*W pixels: an FP16 hazard the engine
        # builder pins to FP32.
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1)) * self.temperature
        out = attn.softmax(dim=-1) @ v
        return self.project_out(out.reshape(b, c, h, w))


class HIM(nn.Module):
    """Hierarchical integration module: cross-attention from every pixel to
    the prior tokens, added to the features."""

    def __init__(self, dim: int, num_heads: int, bias: bool, embed_dim: int, kind: str,
                 qk_scale: Optional[float] = None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.norm1 = LayerNormTokens(dim, kind)
        self.norm2 = LayerNormTokens(embed_dim * 4, kind)
        self.q = nn.Linear(dim, dim, bias=bias)
        self.kv = nn.Linear(embed_dim * 4, 2 * dim, bias=bias)
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        heads = self.num_heads
        x = x.reshape(b, c, -1).transpose(1, 2)  # b (h w) c
        q = self.q(self.norm1(x))
        k, v = self.kv(self.norm2(prior)).chunk(2, dim=-1)
        q = q.reshape(b, -1, heads, c // heads).transpose(1, 2)
        k = k.reshape(b, -1, heads, c // heads).transpose(1, 2)
        v = v.reshape(b, -1, heads, c // heads).transpose(1, 2)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, -1, c)
        x = x + self.proj(out)
        return x.transpose(1, 2).reshape(b, c, h, w)


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, ffn_expansion_factor: float, bias: bool,
                 kind: str, embed_dim: int, group: int) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim, kind)
        self.attn = Attention(dim, num_heads, bias, embed_dim, group)
        self.norm2 = LayerNorm(dim, kind)
        self.ffn = FeedForward(dim, ffn_expansion_factor, bias, embed_dim, group)

    def forward(self, x: torch.Tensor, prior: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), prior)
        return x + self.ffn(self.norm2(x), prior)


class BasicLayer(nn.Module):
    """One level: HIM at its entry when it sees prior tokens (group > 1);
    at the 1-token level (group == 1) every block modulates by the prior."""

    def __init__(self, dim: int, num_heads: int, ffn_expansion_factor: float, bias: bool,
                 kind: str, embed_dim: int, num_blocks: int, group: int) -> None:
        super().__init__()
        self.group = group
        self.blocks = nn.ModuleList([
            TransformerBlock(dim, num_heads, ffn_expansion_factor, bias, kind, embed_dim, group)
            for _ in range(num_blocks)])
        if group > 1:
            self.him = HIM(dim, num_heads, bias, embed_dim, kind)

    def forward(self, x: torch.Tensor, prior: Optional[torch.Tensor] = None) -> torch.Tensor:
        if prior is not None and self.group > 1:
            x = self.him(x, prior)
            prior = None
        for blk in self.blocks:
            x = blk(x, prior)
        return x


class OverlapPatchEmbed(nn.Module):
    def __init__(self, in_c: int = 3, embed_dim: int = 48, bias: bool = False) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_c, embed_dim, kernel_size=3, stride=1, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Downsample(nn.Module):
    def __init__(self, n_feat: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat // 2, kernel_size=3, stride=1, padding=1, bias=False),
                                  PixelUnshuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Upsample(nn.Module):
    def __init__(self, n_feat: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat * 2, kernel_size=3, stride=1, padding=1, bias=False),
                                  PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _prior_reducer(n_in: int, n_out: int, channels: int) -> nn.Sequential:
    """16 -> 4 -> 1 token reduction; Sequential indices as released."""
    return nn.Sequential(Transpose12(), nn.Linear(n_in, n_out), Transpose12(), nn.Linear(channels, channels))


class Transformer(nn.Module):
    """Official `Transformer` (Restormer + HIM), without the dual-pixel branch."""

    def __init__(self, inp_channels: int = 3, out_channels: int = 3, dim: int = 48,
                 num_blocks: Sequence[int] = (4, 6, 6, 8), num_refinement_blocks: int = 4,
                 heads: Sequence[int] = (1, 2, 4, 8), ffn_expansion_factor: float = 2.66,
                 bias: bool = False, LayerNorm_type: str = "WithBias", embed_dim: int = 48,
                 group: int = 4) -> None:
        super().__init__()
        kind = LayerNorm_type
        g2 = group * group
        self.down_1 = _prior_reducer(g2, g2 // 4, embed_dim * 4)
        self.down_2 = _prior_reducer(g2 // 4, 1, embed_dim * 4)

        def level(d: int, h: int, n: int, grp: int) -> BasicLayer:
            return BasicLayer(d, h, ffn_expansion_factor, bias, kind, embed_dim, n, grp)

        self.patch_embed = OverlapPatchEmbed(inp_channels, dim)
        self.encoder_level1 = level(dim, heads[0], num_blocks[0], group)
        self.down1_2 = Downsample(dim)
        self.encoder_level2 = level(dim * 2, heads[1], num_blocks[1], group // 2)
        self.down2_3 = Downsample(dim * 2)
        self.encoder_level3 = level(dim * 4, heads[2], num_blocks[2], group // 2)
        self.down3_4 = Downsample(dim * 4)
        self.latent = level(dim * 8, heads[3], num_blocks[3], 1)
        self.up4_3 = Upsample(dim * 8)
        self.reduce_chan_level3 = nn.Conv2d(dim * 8, dim * 4, kernel_size=1, bias=bias)
        self.decoder_level3 = level(dim * 4, heads[2], num_blocks[2], group // 2)
        self.up3_2 = Upsample(dim * 4)
        self.reduce_chan_level2 = nn.Conv2d(dim * 4, dim * 2, kernel_size=1, bias=bias)
        self.decoder_level2 = level(dim * 2, heads[1], num_blocks[1], group // 2)
        self.up2_1 = Upsample(dim * 2)
        self.decoder_level1 = level(dim * 2, heads[0], num_blocks[0], group)
        self.refinement = level(dim * 2, heads[0], num_refinement_blocks, group)
        self.output = nn.Conv2d(dim * 2, out_channels, kernel_size=3, stride=1, padding=1, bias=bias)

    def forward(self, inp_img: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        prior_1 = prior
        prior_2 = self.down_1(prior_1)
        prior_3 = self.down_2(prior_2).flatten(1)

        enc1 = self.encoder_level1(self.patch_embed(inp_img), prior_1)
        enc2 = self.encoder_level2(self.down1_2(enc1), prior_2)
        enc3 = self.encoder_level3(self.down2_3(enc2), prior_2)
        latent = self.latent(self.down3_4(enc3), prior_3)

        dec3 = self.reduce_chan_level3(torch.cat([self.up4_3(latent), enc3], 1))
        dec3 = self.decoder_level3(dec3, prior_2)
        dec2 = self.reduce_chan_level2(torch.cat([self.up3_2(dec3), enc2], 1))
        dec2 = self.decoder_level2(dec2, prior_2)
        dec1 = self.decoder_level1(torch.cat([self.up2_1(dec2), enc1], 1), prior_1)
        dec1 = self.refinement(dec1, prior_1)
        return self.output(dec1) + inp_img
