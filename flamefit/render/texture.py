"""Bilinear texture lookup with gradients to the texture and to the UVs.

UV convention (FLAME's texture files): ``u`` goes right, ``v`` goes **up**; ``(u, v) = (0, 1)`` is the top-left
corner of texel row 0, column 0. Texel ``(row r, col c)`` has its centre at ``u = (c + 0.5) / Wt``,
``v = 1 - (r + 0.5) / Ht``. Sampling is bilinear between texel centres; outside ``[0, 1]`` (and in the half
texel along the border) ``mode='clamp'`` (default) repeats the edge texels, ``mode='wrap'`` tiles the texture.

Textures are channels-last: ``tex`` (B,Ht,Wt,C) or (Ht,Wt,C) (shared by the batch).
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from flamefit.render._backend import MAX_ABS_UV, check_float, check_index, numba_for


def _sample_packed(tex: torch.Tensor, uv: torch.Tensor, bidx: torch.Tensor | None, mode: str) -> torch.Tensor:
    """tex (B,Ht,Wt,C) or (Ht,Wt,C); uv (N,2); bidx (N,) batch of each sample (None for a shared texture)."""
    if mode not in ("clamp", "wrap"):
        raise ValueError(f"texture mode must be 'clamp' or 'wrap', got {mode!r}")
    if tex.dim() == 3:
        tex = tex.unsqueeze(0)
        bidx = None
    elif tex.shape[0] == 1:
        bidx = None
    Bt, Ht, Wt, C = tex.shape
    flat = tex.reshape(Bt * Ht * Wt, C)
    uv = uv.to(tex.dtype)
    x = uv[:, 0] * Wt - 0.5
    y = (1.0 - uv[:, 1]) * Ht - 0.5
    x0f = torch.floor(x.detach())
    y0f = torch.floor(y.detach())
    fx = (x - x0f).unsqueeze(1)
    fy = (y - y0f).unsqueeze(1)
    x0 = x0f.to(torch.int64)
    y0 = y0f.to(torch.int64)
    x1 = x0 + 1
    y1 = y0 + 1
    if mode == "clamp":
        x0, x1 = x0.clamp(0, Wt - 1), x1.clamp(0, Wt - 1)
        y0, y1 = y0.clamp(0, Ht - 1), y1.clamp(0, Ht - 1)
    else:
        x0, x1 = x0.remainder(Wt), x1.remainder(Wt)
        y0, y1 = y0.remainder(Ht), y1.remainder(Ht)
    base = 0 if bidx is None else bidx * (Ht * Wt)
    r0 = base + y0 * Wt
    r1 = base + y1 * Wt
    idx = torch.stack([r0 + x0, r0 + x1, r1 + x0, r1 + x1], 1).reshape(-1)
    t = flat.index_select(0, idx).view(-1, 4, C)
    top = t[:, 0] + (t[:, 1] - t[:, 0]) * fx
    bottom = t[:, 2] + (t[:, 3] - t[:, 2]) * fx
    return top + (bottom - top) * fy


def texture(tex: torch.Tensor, uv: torch.Tensor, *, mode: str = "clamp") -> torch.Tensor:
    """Sample ``tex`` (B,Ht,Wt,C) or (Ht,Wt,C) at ``uv`` (B,H,W,2) -> (B,H,W,C), bilinear (see module doc)."""
    if uv.shape[-1] != 2:
        raise ValueError(f"uv must end in 2 (u, v), got {tuple(uv.shape)}")
    lead = uv.shape[:-1]
    flat_uv = uv.reshape(-1, 2)
    if tex.dim() == 4 and tex.shape[0] > 1:
        if uv.shape[0] != tex.shape[0]:
            raise ValueError(f"texture batch {tex.shape[0]} does not match the uv batch {uv.shape[0]}")
        per = flat_uv.shape[0] // tex.shape[0]
        bidx = torch.arange(tex.shape[0], device=uv.device).repeat_interleave(per)
    else:
        bidx = torch.zeros(flat_uv.shape[0], dtype=torch.int64, device=uv.device)
    out = texture_packed_t(tex, flat_uv.t().to(tex.dtype), bidx, mode=mode)
    return out.t().reshape(lead + (tex.shape[-1],))


def texture_packed(tex: torch.Tensor, uv: torch.Tensor, batch_index: torch.Tensor, *, mode: str = "clamp"
                   ) -> torch.Tensor:
    """Packed lookup: ``uv`` (N,2) with ``batch_index`` (N,) (e.g. ``frags.pix_batch``) -> (N,C)."""
    return texture_packed_t(tex, uv.t(), batch_index, mode=mode).t()


def texture_packed_t(tex: torch.Tensor, uv_t: torch.Tensor, batch_index: torch.Tensor, *, mode: str = "clamp"
                     ) -> torch.Tensor:
    """Structure-of-arrays lookup: ``uv_t`` (2,N) -> (C,N); numba kernels on CPU, torch elsewhere.

    ValueError for a texture with a zero size, ``uv_t`` not (2,N), non-finite or absurd (beyond
    ``MAX_ABS_UV``) uvs, or a ``batch_index`` outside the texture batch."""
    if mode not in ("clamp", "wrap"):
        raise ValueError(f"texture mode must be 'clamp' or 'wrap', got {mode!r}")
    check_float(tex, "texture")
    if tex.dim() not in (3, 4) or min(tex.shape) < 1:
        raise ValueError(f"texture must be (B,Ht,Wt,C) or (Ht,Wt,C) with every size >= 1, got {tuple(tex.shape)}")
    tex4 = tex if tex.dim() == 4 else tex.unsqueeze(0)
    if uv_t.dim() != 2 or uv_t.shape[0] != 2:
        raise ValueError(f"uv_t must be (2,N) (u and v rows), got {tuple(uv_t.shape)}; a UV layout vt is (T,2)")
    check_float(uv_t, "uv")
    N = uv_t.shape[1]
    if N:
        # one reduction: NaN and inf propagate into the max, so this also rejects non-finite uvs (their texel
        # index would be undefined)
        if not bool(uv_t.detach().abs().amax() <= MAX_ABS_UV):
            raise ValueError(f"uv holds NaN, inf or values beyond +-{MAX_ABS_UV:g} (a UV layout lies in [0, 1])")
    if batch_index.shape != (N,):
        raise ValueError(f"batch_index must be (N,) = ({N},), got {tuple(batch_index.shape)}")
    if tex4.shape[0] > 1:
        check_index(batch_index, tex4.shape[0], "batch_index", "the texture batch")
    if numba_for(tex4) and uv_t.dtype == tex4.dtype:
        return TextureSample.apply(tex4, uv_t, batch_index, mode == "wrap")
    return _sample_packed(tex, uv_t.t(), batch_index, mode).t()


# ------------------------------------------------------------------------------------------ autograd Functions


class TextureSample(torch.autograd.Function):
    """Bilinear lookup (numba CPU kernels; see texture.py for the convention): tex (Bt,Ht,Wt,C), uv (2,N),
    bidx (N,) -> (C,N)."""

    @staticmethod
    def forward(ctx, tex, uv, bidx, wrap: bool):
        from flamefit.render import _pixel_numba as pn

        tex = tex.contiguous()
        uv = uv.contiguous()
        out = tex.new_empty(tex.shape[3], uv.shape[1])
        pn.texture_forward(tex.detach().numpy(), uv.detach().numpy(), bidx.numpy(), wrap, out.numpy())
        ctx.save_for_backward(tex, uv, bidx)
        ctx.wrap = wrap
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g_out):
        from flamefit.render import _pixel_numba as pn

        tex, uv, bidx = ctx.saved_tensors
        want_tex, want_uv = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        g_tex = torch.zeros_like(tex) if want_tex else tex.new_zeros(1, 1, 1, 1)
        g_uv = torch.empty_like(uv) if want_uv else uv.new_empty(2, 1)
        pn.texture_backward(tex.detach().numpy(), uv.detach().numpy(), bidx.numpy(), ctx.wrap,
                            g_out.contiguous().numpy(), want_tex, want_uv, g_tex.numpy(), g_uv.numpy())
        return (g_tex if want_tex else None), (g_uv if want_uv else None), None, None
