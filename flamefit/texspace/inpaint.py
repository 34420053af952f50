"""Texture completion: a small gated-convolution U-Net trained to restore free-form holes in UV albedo maps.

The method of FLAME's texture space (as its authors describe it): paint random strokes inside the *visible*
region of each unwrapped map, train a network to restore them (loss on the visible-but-masked texels only: the
ground truth of the invisible texels is unknown), then let it fill each map's invisible regions.

* :class:`InpaintNet`: gated convolutions (Yu et al., "Free-form image inpainting with gated convolution", 2019)
  in a 3-level U-Net with a dilated bottleneck (receptive field > 100 texels at 256^2) — small enough to train
  on 2 CPU cores in minutes (``base_channels`` 16: ~0.2 M parameters). Input: the map with the unknown texels
  zeroed, the known mask and the layout mask; output: a full map; :func:`complete` pastes the known texels back.
* :func:`free_form_strokes`: DeepFill v2-style random brush strokes (random vertex count, angles, lengths and
  widths), drawn with OpenCV from a ``numpy.random.Generator``.
* :func:`train_inpainter`: L1 (+ a gradient-difference term) on the held-out visible texels, Adam; everything
  random comes from one local ``torch.Generator`` seeded from ``config.seed`` (no global seeds), and its state is
  part of the checkpoint, so a resumed run continues exactly as an uninterrupted one. Checkpoints are written
  atomically (temp file + rename) every ``checkpoint_every`` steps and at the end.
* :func:`inpaint_maps`: fill maps' unknown texels with a trained net (batched; device follows the maps).

Maps are channels-last (N,H,W,3) RGB 0..1 tensors, masks (N,H,W) bool, as everywhere in texspace.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from flamefit._files import atomic_path
from flamefit.errors import ModelFileError
from flamefit.texspace.fills import push_pull
from flamefit.texspace.strokes import training_holes

CHECKPOINT_FORMAT = "flamefit-inpaint-v1"
MEMBRANE_ITERS = 20  # Jacobi steps per pyramid level of the classical fills the network starts from


class GatedConv2d(nn.Module):
    """``ELU(conv_f(x)) * sigmoid(conv_g(x))`` as one convolution with 2x the output channels."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, dilation: int = 1,
                 activation: bool = True):
        super().__init__()
        pad = dilation * (kernel - 1) // 2
        self.conv = nn.Conv2d(cin, 2 * cout, kernel, stride=stride, padding=pad, dilation=dilation)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f, g = self.conv(x).chunk(2, dim=1)
        if self.activation:
            f = F.elu(f)
        return f * torch.sigmoid(g)


class InpaintNet(nn.Module):
    """Gated U-Net: 3 scales (1, 1/2, 1/4), dilated gated convolutions (2, 4, 8) at 1/4, skip connections. It
    predicts a per-texel blend of two cheap classical fills plus a colour correction: a membrane fill
    (:func:`flamefit.texspace.fills.push_pull` with smoothing) of the known texels and (``mirror_input``) the
    u-mirrored texel where known, membrane for the rest. The output layer starts at zero: the untrained net is
    their average.

    ``make_input(maps (B,3,H,W), known (B,1,H,W), layout (B,1,H,W))`` -> input channels (crop them, if at all,
    after this step); ``forward(inputs)`` -> (B,3,H,W) prediction in 0..1 everywhere (H, W multiples of 4).
    With ``mirror_input`` the u-mirrored map and known mask are extra input channels: on FLAME's nearly
    left-right symmetric layout a texel's mirror image sits at the same place in the flipped map, so the network
    can copy from the other side of the face without a huge receptive field.
    """

    def __init__(self, base_channels: int = 16, mirror_input: bool = True):
        super().__init__()
        c = int(base_channels)
        self.base_channels = c
        self.mirror_input = bool(mirror_input)
        cin = 15 if mirror_input else 11
        self.enc1 = GatedConv2d(cin, c, 3)
        self.down1 = GatedConv2d(c, 2 * c, 3, stride=2)
        self.enc2 = GatedConv2d(2 * c, 2 * c, 3)
        self.down2 = GatedConv2d(2 * c, 4 * c, 3, stride=2)
        self.mid = nn.ModuleList([GatedConv2d(4 * c, 4 * c, 3, dilation=d) for d in (2, 4, 8, 1)])
        self.dec2 = GatedConv2d(4 * c + 2 * c, 2 * c, 3)
        self.dec1 = GatedConv2d(2 * c + c, c, 3)
        self.out = nn.Conv2d(c, 4, 3, padding=1)  # blend logit + colour correction

    def make_input(self, maps: torch.Tensor, known: torch.Tensor, layout: torch.Tensor) -> torch.Tensor:
        # centre the known colours so zero means "no information" rather than "black"
        x = (maps - 0.5) * known
        # two cheap classical fills that the network blends and corrects (fast to learn for a small net): a smooth
        # push-pull of the known texels (best across thin gaps) and, with mirror_input, the u-mirrored texel where
        # that is known, push-pull for the rest (best over large unseen regions)
        local = push_pull(maps, known, smooth_iters=MEMBRANE_ITERS) - 0.5
        if self.mirror_input:
            km = known.flip(-1)
            base = torch.where(known > 0, maps, torch.where(km > 0, maps.flip(-1), torch.zeros_like(maps)))
            mirrored = push_pull(base, torch.maximum(known, km), smooth_iters=MEMBRANE_ITERS) - 0.5
        else:
            mirrored = local
        parts = [local, mirrored, x, known, layout]
        if self.mirror_input:
            parts += [x.flip(-1), known.flip(-1)]
        return torch.cat(parts, 1)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(inputs)
        e2 = self.enc2(self.down1(e1))
        m = self.down2(e2)
        for layer in self.mid:
            m = layer(m)
        d2 = self.dec2(torch.cat([F.interpolate(m, size=e2.shape[-2:], mode="nearest"), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, size=e1.shape[-2:], mode="nearest"), e1], 1))
        o = self.out(d1)
        alpha = torch.sigmoid(o[:, :1])
        return (alpha * inputs[:, :3] + (1 - alpha) * inputs[:, 3:6] + 0.5 + o[:, 1:]).clamp(0.0, 1.0)


@torch.no_grad()
def init_parameters(net: nn.Module, generator: torch.Generator) -> None:
    """PyTorch's default convolution init (uniform, bound 1/sqrt(fan_in)) drawn from ``generator`` instead of
    the global RNG, so a seed alone fixes the network; the output layer starts at zero (see InpaintNet)."""
    for m in net.modules():
        if m is getattr(net, "out", None):
            m.weight.zero_()
            m.bias.zero_()
        elif isinstance(m, nn.Conv2d):
            bound = 1.0 / math.sqrt(m.weight[0].numel())
            for p in (m.weight, m.bias):
                if p is not None:
                    p.copy_((torch.rand(p.shape, generator=generator, dtype=p.dtype) * 2 - 1) * bound)


def _nchw(maps: torch.Tensor) -> torch.Tensor:
    return maps.permute(0, 3, 1, 2)


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1)


def complete(net: InpaintNet, maps: torch.Tensor, known: torch.Tensor, layout: torch.Tensor | None = None
             ) -> torch.Tensor:
    """Channels-last maps (B,H,W,3) + known (B,H,W) bool -> (B,H,W,3): the known texels kept, the others
    predicted by ``net``. ``layout`` (H,W) or (B,H,W) bool: texels covered by the UV layout (default all)."""
    B, H, W, _ = maps.shape
    if H % 4 or W % 4:
        raise ValueError(f"maps must be a multiple of 4 texels on each side, got {H}x{W}")
    k = known.to(maps.dtype).unsqueeze(1)
    if layout is None:
        lay = torch.ones_like(k)
    else:
        lay = layout.to(device=maps.device, dtype=maps.dtype).expand(B, H, W).unsqueeze(1)
    pred = net(net.make_input(_nchw(maps), k, lay))
    return _nhwc(pred * (1 - k) + _nchw(maps) * k)


# ------------------------------------------------------------------------------------------------ training


@dataclass
class InpaintConfig:
    """Training settings (documented defaults; saved in every checkpoint)."""

    steps: int = 2000  # optimiser steps
    batch_size: int = 4
    lr: float = 2e-3  # Adam
    base_channels: int = 16  # network width (16: ~0.43 M parameters)
    mirror_input: bool = True  # feed the u-mirrored map too (see InpaintNet)
    crop: int | None = 128  # train on random crops of this size (multiple of 4; None = whole maps): 4x cheaper
    grad_weight: float = 0.5  # weight of the gradient-difference term next to L1
    seed: int = 0  # everything random (init, batches, strokes) derives from it
    checkpoint_every: int = 200  # steps between checkpoints (and at the end)
    flip_u: bool = True  # augment with u -> 1-u mirrored maps (FLAME's layout is nearly left-right symmetric)
    max_strokes: int = 4
    max_width_frac: float = 0.08
    max_length_frac: float = 0.25

    def __post_init__(self):
        if (self.steps < 0 or self.batch_size < 1 or self.lr <= 0 or self.base_channels < 1
                or (self.crop is not None and (self.crop < 8 or self.crop % 4))):
            raise ValueError(f"invalid inpainting config {self}")


def _masked_losses(pred: torch.Tensor, target: torch.Tensor, holes: torch.Tensor, grad_weight: float
                   ) -> torch.Tensor:
    """L1 on the hole texels (B,H,W,3 maps, B,H,W holes) + gradient differences between neighbours in holes."""
    h = holes.to(pred.dtype).unsqueeze(-1)
    n = h.sum().clamp_min(1.0) * 3
    l1 = ((pred - target).abs() * h).sum() / n
    if grad_weight <= 0:
        return l1
    d = pred - target
    hx = h[:, :, 1:] * h[:, :, :-1]
    hy = h[:, 1:] * h[:, :-1]
    gx = ((d[:, :, 1:] - d[:, :, :-1]).abs() * hx).sum() / (hx.sum().clamp_min(1.0) * 3)
    gy = ((d[:, 1:] - d[:, :-1]).abs() * hy).sum() / (hy.sum().clamp_min(1.0) * 3)
    return l1 + grad_weight * (gx + gy)


def _atomic_torch_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_checkpoint(path: str | Path, net: InpaintNet, optimizer: torch.optim.Optimizer | None, step: int,
                    config: InpaintConfig, generator: torch.Generator | None = None,
                    history: list[float] | None = None) -> None:
    """Atomically write the network, optimiser, step, config and RNG state."""
    _atomic_torch_save({
        "format": CHECKPOINT_FORMAT,
        "config": dataclasses.asdict(config),
        "step": int(step),
        "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "generator": None if generator is None else generator.get_state(),
        "history": list(history or []),
    }, Path(path))


def _read_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"inpainting checkpoint {path} does not exist; train one with train_inpainter "
                             "(`flamefit texspace train-inpaint`)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable/damaged file
        raise ModelFileError(f"cannot read inpainting checkpoint {path}: {exc}. Delete it and train again") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ModelFileError(f"{path} is not a flamefit inpainting checkpoint ({CHECKPOINT_FORMAT})")
    return ckpt


def load_inpainter(path: str | Path, device: torch.device | str | None = None) -> InpaintNet:
    """A trained network from a checkpoint, in eval mode, on ``device`` (default CPU)."""
    ckpt = _read_checkpoint(path)
    net = InpaintNet(base_channels=int(ckpt["config"]["base_channels"]),
                     mirror_input=bool(ckpt["config"].get("mirror_input", True)))
    net.load_state_dict(ckpt["model"])
    return net.to(device or "cpu").eval()


@dataclass
class TrainResult:
    net: InpaintNet
    step: int
    history: list[float]  # training loss per step (all steps, including resumed ones)
    seconds: float  # wall time of this call


def train_inpainter(maps: torch.Tensor, visible: torch.Tensor, config: InpaintConfig | None = None, *,
                    layout: torch.Tensor | None = None, checkpoint: str | Path | None = None, resume: bool = True,
                    progress: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train :class:`InpaintNet` on maps (N,H,W,3) RGB 0..1 with their visibility (N,H,W) bool.

    Each step draws ``batch_size`` maps, random strokes inside their visible texels (:func:`training_holes`), and
    minimises the masked loss on those strokes. The network and optimiser live on ``maps.device``. With
    ``checkpoint`` set, progress is saved there atomically and (``resume=True``) an existing checkpoint is
    continued from its step, optimiser and RNG state (its config wins for the network; ``steps`` may be raised).
    """
    cfg = config or InpaintConfig()
    if maps.dim() != 4 or maps.shape[-1] != 3 or visible.shape != maps.shape[:3]:
        raise ValueError(f"maps must be (N,H,W,3) and visible (N,H,W); got {tuple(maps.shape)}, "
                         f"{tuple(visible.shape)}")
    N, H, W, _ = maps.shape
    if H % 4 or W % 4:
        raise ValueError(f"maps must be a multiple of 4 texels on each side, got {H}x{W}")
    dev = maps.device
    visible = visible.to(dev).bool()
    lay = (torch.ones(H, W, dtype=torch.bool, device=dev) if layout is None else layout.to(dev).bool())
    gen = torch.Generator().manual_seed(int(cfg.seed))
    step, history = 0, []
    ckpt = _read_checkpoint(checkpoint) if checkpoint is not None and resume and Path(checkpoint).is_file() else None
    if ckpt is not None:
        cfg = dataclasses.replace(InpaintConfig(**ckpt["config"]), steps=max(cfg.steps, ckpt["config"]["steps"]))
    net = InpaintNet(cfg.base_channels, cfg.mirror_input)
    init_parameters(net, gen)
    net = net.to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    if ckpt is not None:
        net.load_state_dict(ckpt["model"])
        if ckpt["optimizer"] is not None:
            opt.load_state_dict(ckpt["optimizer"])
        if ckpt["generator"] is not None:
            gen.set_state(ckpt["generator"])
        step, history = int(ckpt["step"]), list(ckpt["history"])
    stroke_kw = dict(max_strokes=cfg.max_strokes, max_width_frac=cfg.max_width_frac,
                     max_length_frac=cfg.max_length_frac)
    t0 = time.perf_counter()
    net.train()
    while step < cfg.steps:
        idx = torch.randint(0, N, (cfg.batch_size,), generator=gen).to(dev)
        target = maps.index_select(0, idx)
        vis = visible.index_select(0, idx)
        if cfg.flip_u:
            flip = (torch.rand(cfg.batch_size, generator=gen) < 0.5).to(dev)
            target = torch.where(flip[:, None, None, None], target.flip(2), target)
            vis = torch.where(flip[:, None, None], vis.flip(2), vis)
        holes = training_holes(vis, gen, **stroke_kw)
        known = vis & ~holes
        inputs = net.make_input(_nchw(target), known.to(target.dtype).unsqueeze(1),
                                lay.to(target.dtype).expand(cfg.batch_size, 1, H, W))
        if cfg.crop is not None and (cfg.crop < H or cfg.crop < W):
            # one random window per step, preferring ones with holes: draw a hole texel, centre the window there
            ch, cw = min(cfg.crop, H), min(cfg.crop, W)
            cand = torch.nonzero(holes.any(0).cpu())
            if cand.shape[0]:
                cy, cx = cand[int(torch.randint(0, cand.shape[0], (1,), generator=gen))].tolist()
            else:
                cy, cx = H // 2, W // 2
            y0 = min(max(0, cy - ch // 2), H - ch)
            x0 = min(max(0, cx - cw // 2), W - cw)
            inputs = inputs[:, :, y0:y0 + ch, x0:x0 + cw]
            target = target[:, y0:y0 + ch, x0:x0 + cw]
            holes = holes[:, y0:y0 + ch, x0:x0 + cw]
        pred = _nhwc(net(inputs))
        loss = _masked_losses(pred, target, holes, cfg.grad_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        history.append(float(loss.detach()))
        if progress is not None:
            progress(step, history[-1])
        if checkpoint is not None and (step % max(1, cfg.checkpoint_every) == 0 or step == cfg.steps):
            save_checkpoint(checkpoint, net, opt, step, cfg, gen, history)
    net.eval()
    return TrainResult(net=net, step=step, history=history, seconds=time.perf_counter() - t0)


@torch.no_grad()
def inpaint_maps(net: InpaintNet, maps: torch.Tensor, known: torch.Tensor, layout: torch.Tensor | None = None,
                 *, batch_size: int = 8) -> torch.Tensor:
    """Fill the unknown texels of maps (N,H,W,3) (known (N,H,W) bool) with ``net``; the known texels are kept.
    Runs on the maps' device (the network is moved there)."""
    if maps.shape[:3] != known.shape:
        raise ValueError(f"maps {tuple(maps.shape)} and known {tuple(known.shape)} do not match")
    net = net.to(maps.device).eval()
    out = []
    for i in range(0, maps.shape[0], batch_size):
        out.append(complete(net, maps[i:i + batch_size], known[i:i + batch_size].to(maps.device), layout))
    return torch.cat(out) if out else maps.clone()
