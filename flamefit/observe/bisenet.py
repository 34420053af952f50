"""Optional face parsing with BiSeNet, for users who supply the widely used weights ``79999_iter.pth``.

The network is the 19-class face-parsing BiSeNet (ResNet-18 context path, attention refinement and feature
fusion modules) trained on CelebAMask-HQ, re-implemented here in plain torch (no torchvision) with the module
names of the published state dict, so the file loads as is. flamefit ships no weights and downloads none.

Classes: 0 background, 1 skin, 2/3 brows, 4/5 eyes, 6 glasses, 7/8 ears, 9 earring, 10 nose, 11 mouth
(inside), 12/13 upper/lower lip, 14 neck, 15 necklace, 16 cloth, 17 hair, 18 hat.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flamefit.errors import ModelFileError

N_CLASSES = 19
CLASS_NAMES = ("background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear", "ear_r",
               "nose", "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat")
#: the classes that make the photometric skin mask: skin, nose, lips
SKIN_CLASSES = (1, 10, 12, 13)
_INPUT_PX = 512
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class _ConvBNReLU(nn.Module):
    def __init__(self, cin: int, cout: int, ks: int = 3, stride: int = 1, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, ks, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if cin != cout or stride != 1:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        skip = x if self.downsample is None else self.downsample(x)
        return F.relu(skip + y)


class _ResNet18(nn.Module):
    """ResNet-18 trunk (no classifier); returns the 1/8, 1/16 and 1/32 feature maps."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(_BasicBlock(64, 64), _BasicBlock(64, 64))
        self.layer2 = nn.Sequential(_BasicBlock(64, 128, 2), _BasicBlock(128, 128))
        self.layer3 = nn.Sequential(_BasicBlock(128, 256, 2), _BasicBlock(256, 256))
        self.layer4 = nn.Sequential(_BasicBlock(256, 512, 2), _BasicBlock(512, 512))

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        f8 = self.layer2(self.layer1(x))
        f16 = self.layer3(f8)
        return f8, f16, self.layer4(f16)


class _AttentionRefinement(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = _ConvBNReLU(cin, cout)
        self.conv_atten = nn.Conv2d(cout, cout, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(cout)

    def forward(self, x):
        feat = self.conv(x)
        att = torch.sigmoid(self.bn_atten(self.conv_atten(F.adaptive_avg_pool2d(feat, 1))))
        return feat * att


class _ContextPath(nn.Module):
    def __init__(self):
        super().__init__()
        self.resnet = _ResNet18()
        self.arm16 = _AttentionRefinement(256, 128)
        self.arm32 = _AttentionRefinement(512, 128)
        self.conv_head32 = _ConvBNReLU(128, 128)
        self.conv_head16 = _ConvBNReLU(128, 128)
        self.conv_avg = _ConvBNReLU(512, 128, ks=1, padding=0)

    def forward(self, x):
        f8, f16, f32 = self.resnet(x)
        glob = self.conv_avg(F.adaptive_avg_pool2d(f32, 1))
        up32 = self.arm32(f32) + F.interpolate(glob, f32.shape[2:], mode="nearest")
        up32 = self.conv_head32(F.interpolate(up32, f16.shape[2:], mode="nearest"))
        up16 = self.arm16(f16) + up32
        up16 = self.conv_head16(F.interpolate(up16, f8.shape[2:], mode="nearest"))
        return f8, up16, up32


class _FeatureFusion(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.convblk = _ConvBNReLU(cin, cout, ks=1, padding=0)
        self.conv1 = nn.Conv2d(cout, cout // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(cout // 4, cout, 1, bias=False)

    def forward(self, a, b):
        feat = self.convblk(torch.cat([a, b], dim=1))
        att = torch.sigmoid(self.conv2(F.relu(self.conv1(F.adaptive_avg_pool2d(feat, 1)))))
        return feat + feat * att


class _Head(nn.Module):
    def __init__(self, cin: int, cmid: int, n_classes: int):
        super().__init__()
        self.conv = _ConvBNReLU(cin, cmid)
        self.conv_out = nn.Conv2d(cmid, n_classes, 1, bias=False)

    def forward(self, x):
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """Face-parsing BiSeNet. ``forward(x (B,3,H,W) normalised)`` -> logits (B, n_classes, H, W).

    The auxiliary heads (``conv_out16``/``conv_out32``) exist so the published state dict loads strictly;
    only the main head is evaluated.
    """

    def __init__(self, n_classes: int = N_CLASSES):
        super().__init__()
        self.cp = _ContextPath()
        self.ffm = _FeatureFusion(256, 256)
        self.conv_out = _Head(256, 256, n_classes)
        self.conv_out16 = _Head(128, 64, n_classes)
        self.conv_out32 = _Head(128, 64, n_classes)

    def forward(self, x):
        f8, cp8, _ = self.cp(x)
        logits = self.conv_out(self.ffm(f8, cp8))
        return F.interpolate(logits, x.shape[2:], mode="bilinear", align_corners=True)


def load_bisenet(path: str | os.PathLike, device: str | torch.device = "cpu") -> BiSeNet:
    """Load ``79999_iter.pth`` (a plain state dict; a ``module.`` prefix from DataParallel is accepted)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(
            f"BiSeNet face-parsing weights not found: {path}. Pass the path of 79999_iter.pth "
            "(from the face-parsing.PyTorch project), or use the default 'landmarks' mask backend."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to unpickle is a bad file for the user
        raise ModelFileError(f"Cannot read BiSeNet weights {path}: {exc}. Is it a torch state dict?") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(f"{path} is not a BiSeNet state dict (expected a dict of tensors).")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    n_classes = state["conv_out.conv_out.weight"].shape[0] if "conv_out.conv_out.weight" in state else N_CLASSES
    net = BiSeNet(n_classes)
    expected = set(net.state_dict())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise ModelFileError(
            f"{path} does not match the face-parsing BiSeNet: {len(missing)} missing keys "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})."
        )
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: tensor shapes do not match the face-parsing BiSeNet ({exc}).") from exc
    return net.eval().to(device)


@lru_cache(maxsize=2)
def _cached(path: str, mtime: float) -> BiSeNet:
    return load_bisenet(path)


def parse_face(image: np.ndarray, weights: str | os.PathLike | BiSeNet) -> np.ndarray:
    """Class probabilities (H, W, n_classes) float32 for an RGB float 0..1 image (a face crop with context)."""
    import cv2

    net = weights if isinstance(weights, BiSeNet) else _cached(str(weights), Path(weights).stat().st_mtime
                                                                if Path(weights).exists() else 0.0)
    h, w = image.shape[:2]
    inp = cv2.resize(np.ascontiguousarray(image, dtype=np.float32), (_INPUT_PX, _INPUT_PX),
                     interpolation=cv2.INTER_AREA if min(h, w) > _INPUT_PX else cv2.INTER_LINEAR)
    param = next(net.parameters())
    x = torch.as_tensor(inp, dtype=param.dtype, device=param.device).permute(2, 0, 1)[None]
    mean = torch.as_tensor(_MEAN, dtype=x.dtype, device=x.device)[:, None, None]
    std = torch.as_tensor(_STD, dtype=x.dtype, device=x.device)[:, None, None]
    with torch.no_grad():
        prob = torch.softmax(net((x - mean) / std), dim=1)[0].permute(1, 2, 0).float().cpu().numpy()
    return cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, -1)


def parse_skin(image: np.ndarray, weights) -> np.ndarray:
    """Probability (H, W) float32 that a pixel is skin, nose or lips under the face parser."""
    prob = parse_face(image, weights)
    return np.clip(prob[:, :, list(SKIN_CLASSES)].sum(axis=2), 0.0, 1.0).astype(np.float32)
