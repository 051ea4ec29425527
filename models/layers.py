"""Building blocks shared by TRM and HRM.

Every operation follows the official code's order and casting points (see
`../shared/reference/official-trm-hrm.md` §1.1): weights are stored in float32 and cast to
the activation dtype at each call, RMSNorm and RoPE run in float32 and round back, and
the residual add happens in the activation dtype before the norm. Doing the same here is
what makes official checkpoints give the same numbers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def trunc_normal_init_(tensor: torch.Tensor, std: float = 1.0, lower: float = -2.0, upper: float = 2.0):
    """JAX-style truncated normal whose *truncated* distribution has standard deviation `std`."""
    with torch.no_grad():
        if std == 0:
            return tensor.zero_()
        sqrt2 = math.sqrt(2)
        a, b = math.erf(lower / sqrt2), math.erf(upper / sqrt2)
        z = (b - a) / 2
        c = (2 * math.pi) ** -0.5
        pdf_u, pdf_l = c * math.exp(-0.5 * lower**2), c * math.exp(-0.5 * upper**2)
        comp_std = std / math.sqrt(1 - (upper * pdf_u - lower * pdf_l) / z - ((pdf_u - pdf_l) / z) ** 2)
        tensor.uniform_(a, b).erfinv_().mul_(sqrt2 * comp_std).clip_(lower * comp_std, upper * comp_std)
    return tensor


def find_multiple(a: int, b: int) -> int:
    return (-(a // -b)) * b


def rms_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Weightless RMSNorm over the last axis, computed in float32."""
    dtype = x.dtype
    x = x.to(torch.float32)
    x = x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps)
    return x.to(dtype)


class CastedLinear(nn.Module):
    """Linear layer with float32 master weights cast to the input dtype at call time."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False):
        super().__init__()
        self.weight = nn.Parameter(trunc_normal_init_(torch.empty(out_features, in_features), std=in_features**-0.5))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        return F.linear(x, self.weight.to(x.dtype), bias)


class CastedEmbedding(nn.Module):
    """Embedding table kept in float32, looked up in `cast_to`. The parameter name matches the official
    `embedding_weight` so state dicts load unchanged."""

    def __init__(self, num: int, dim: int, init_std: float, cast_to: torch.dtype):
        super().__init__()
        self.cast_to = cast_to
        self.embedding_weight = nn.Parameter(trunc_normal_init_(torch.empty(num, dim), std=init_std))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.embedding_weight.to(self.cast_to))


class RotaryEmbedding(nn.Module):
    """RoPE tables for `max_len` positions (the puzzle-embedding prefix counts as positions too)."""

    def __init__(self, head_dim: int, max_len: int, base: float):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        freqs = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)  # [max_len, head_dim]
        # Never saved in a checkpoint: recomputed on construction, as the official code does.
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cos, self.sin


class GridRotaryEmbedding(RotaryEmbedding):
    """2D (axial) RoPE for a side x side grid (not in the official code; an opt-in `pos_encodings: rope2d`).

    Rotation pair (i, i + D/2) turns by row * f_i for the first half of the pairs and by column * f_i for
    the second, so a head can single out the cell one row up as easily as the cell one column left. With
    1D RoPE the vertical neighbour is `side` tokens away, where only the few fastest frequencies still
    vary; our attention models never learnt grid neighbourhoods that way (training/ATTENTION.md).
    Prefix positions (puzzle embedding) sit at (0, 0); cell k at (1 + k // side, 1 + k % side).
    The table has the same layout as RotaryEmbedding's, so `apply_rotary` is shared.
    """

    def __init__(self, head_dim: int, prefix: int, side: int, base: float):
        nn.Module.__init__(self)
        if head_dim % 4:
            raise ValueError(f"rope2d needs a head dim divisible by 4, got {head_dim}")
        quarter = head_dim // 4
        inv_freq = 1.0 / (base ** (torch.arange(0, quarter, dtype=torch.float32) / quarter))
        cells = torch.arange(side * side)
        rows = torch.cat((torch.zeros(prefix), 1 + cells // side)).to(torch.float32)
        cols = torch.cat((torch.zeros(prefix), 1 + cells % side)).to(torch.float32)
        angles = torch.cat((torch.outer(rows, inv_freq), torch.outer(cols, inv_freq)), dim=-1)  # [len, D/2]
        emb = torch.cat((angles, angles), dim=-1)
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """Rotate-half RoPE on q, k of shape [B, S, H, D], in float32, rounded back to their dtype."""
    dtype = q.dtype
    q, k = q.to(cos.dtype), k.to(cos.dtype)
    cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)  # [S, 1, D], broadcast over heads
    q = q * cos + _rotate_half(q) * sin
    k = k * cos + _rotate_half(k) * sin
    return q.to(dtype), k.to(dtype)


class GridRelativeBias(nn.Module):
    """A learned attention-logit bias per head and 2D grid offset (not in the official code; opt-in
    `grid_bias: true`), as in Swin's relative position bias, for a prefix + side x side grid.

    Why: with RoPE a head must learn q/k directions whose rotated dot product peaks at one grid offset
    before it can read a neighbour; until then attention is near uniform and the model sits on the
    "copy the input" plateau (training/ATTENTION.md). Here "the cell above" is one entry of a table, and
    the table starts as a neighbourhood prior: head h scores a key by -2^(2-h) x (Manhattan distance - 1)^+,
    so the cell and its four neighbours tie, head 0 sees little beyond them (e^-4 at distance 2) and the
    later heads are nearly flat over the whole grid. Entries for cell->prefix, prefix->cell and
    prefix->prefix start at 0. (A plain 2D ALiBi start, -2^-h x distance, learned about half as fast.)
    """

    def __init__(self, num_heads: int, prefix: int, side: int):
        super().__init__()
        n = 2 * side - 1  # offsets -(side-1) .. side-1 per axis
        cells = torch.arange(side * side)
        r, c = cells // side, cells % side
        offset = (r[:, None] - r[None, :] + side - 1) * n + (c[:, None] - c[None, :] + side - 1)  # [L, L]
        S = prefix + side * side
        index = torch.full((S, S), n * n + 2)  # prefix -> prefix
        index[prefix:, :prefix] = n * n  # a cell reading the prefix
        index[:prefix, prefix:] = n * n + 1  # the prefix reading a cell
        index[prefix:, prefix:] = offset
        self.register_buffer("index", index, persistent=False)
        d = torch.arange(n) - (side - 1)
        manhattan = (d[:, None].abs() + d[None, :].abs()).flatten().to(torch.float32)  # [n*n]
        slopes = 2.0 ** (2 - torch.arange(num_heads, dtype=torch.float32))  # [H]: 4, 2, 1, 1/2, ...
        table = torch.zeros(num_heads, n * n + 3)
        table[:, : n * n] = -slopes[:, None] * (manhattan - 1).clamp(min=0)
        self.table = nn.Parameter(table)  # [H, offsets + 3]; the trainer never decays it (a prior, not a weight)

    def forward(self) -> torch.Tensor:
        return self.table[:, self.index]  # [H, S, S], float32


class Attention(nn.Module):
    """Non-causal multi-head self-attention; q/k/v rows of `qkv_proj` are [all q | all k | all v]."""

    def __init__(self, hidden_size: int, num_heads: int, grid: tuple[int, int] | None = None):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.qkv_proj = CastedLinear(hidden_size, 3 * hidden_size)
        self.o_proj = CastedLinear(hidden_size, hidden_size)
        # grid = (prefix, side): a learned 2D relative-position bias (GridRelativeBias); None = official attention
        self.grid_bias = GridRelativeBias(num_heads, *grid) if grid is not None else None

    def forward(self, h: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        B, S, _ = h.shape
        qkv = self.qkv_proj(h).view(B, S, 3 * self.num_heads, self.head_dim)
        q, k, v = qkv.split(self.num_heads, dim=2)  # each [B, S, H, D]
        if cos_sin is not None:
            q, k = apply_rotary(q, k, *cos_sin)
        # SDPA on [B, H, S, D] views, exactly the tensors the official code passes.
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        bias = self.grid_bias().to(q.dtype) if self.grid_bias is not None else None  # [H, S, S] broadcast over B
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, is_causal=False)
        return self.o_proj(out.transpose(1, 2).reshape(B, S, -1))


class SwiGLU(nn.Module):
    def __init__(self, hidden_size: int, expansion: float):
        super().__init__()
        inter = find_multiple(round(expansion * hidden_size * 2 / 3), 256)
        self.gate_up_proj = CastedLinear(hidden_size, 2 * inter)
        self.down_proj = CastedLinear(inter, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class Block(nn.Module):
    """Post-norm transformer block. With `mlp_t` the attention is replaced by a SwiGLU that mixes
    along the sequence axis (TRM-MLP), normalised over that axis too."""

    def __init__(self, hidden_size: int, num_heads: int, expansion: float, eps: float,
                 mlp_t: bool = False, total_len: int = 0, grid: tuple[int, int] | None = None):
        super().__init__()
        self.eps = eps
        self.mlp_t = SwiGLU(total_len, expansion) if mlp_t else None
        self.self_attn = None if mlp_t else Attention(hidden_size, num_heads, grid)
        self.mlp = SwiGLU(hidden_size, expansion)

    def forward(self, h: torch.Tensor, cos_sin=None) -> torch.Tensor:
        if self.mlp_t is not None:
            h = h.transpose(1, 2)  # [B, hidden, L+P]
            h = rms_norm(h + self.mlp_t(h), self.eps)
            h = h.transpose(1, 2)
        else:
            h = rms_norm(h + self.self_attn(h, cos_sin), self.eps)
        return rms_norm(h + self.mlp(h), self.eps)


class ReasoningModule(nn.Module):
    """A stack of blocks applied to `h + injection` (L_level, and HRM's H_level)."""

    def __init__(self, layers: list[Block]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, h: torch.Tensor, injection: torch.Tensor, cos_sin=None) -> torch.Tensor:
        h = h + injection
        for layer in self.layers:
            h = layer(h, cos_sin)
        return h
