"""The optional BiSeNet face-parsing backend: loads state dicts in the published 79999_iter.pth format."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from flamefit.errors import ModelFileError  # noqa: E402
from flamefit.observe.bisenet import N_CLASSES, BiSeNet, load_bisenet, parse_face  # noqa: E402

# A sample of the key names in the published face-parsing.PyTorch checkpoint (79999_iter.pth).
_PUBLISHED_KEYS = [
    "cp.resnet.conv1.weight",
    "cp.resnet.bn1.running_mean",
    "cp.resnet.layer1.0.conv1.weight",
    "cp.resnet.layer2.0.downsample.0.weight",
    "cp.resnet.layer2.0.downsample.1.num_batches_tracked",
    "cp.resnet.layer4.1.bn2.running_var",
    "cp.arm16.conv.conv.weight",
    "cp.arm16.conv_atten.weight",
    "cp.arm32.bn_atten.bias",
    "cp.conv_head32.conv.weight",
    "cp.conv_head16.bn.weight",
    "cp.conv_avg.conv.weight",
    "ffm.convblk.conv.weight",
    "ffm.conv1.weight",
    "ffm.conv2.weight",
    "conv_out.conv.conv.weight",
    "conv_out.conv_out.weight",
    "conv_out16.conv_out.weight",
    "conv_out32.conv.bn.running_mean",
]


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    torch.manual_seed(0)
    net = BiSeNet(N_CLASSES)
    for m in net.modules():  # give batch norm non-trivial statistics so a wrong load shows
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("bisenet") / "79999_iter.pth"
    torch.save(net.state_dict(), path)
    return path, net


def test_state_dict_uses_the_published_key_names(weights_file):
    path, net = weights_file
    keys = set(net.state_dict())
    missing = [k for k in _PUBLISHED_KEYS if k not in keys]
    assert not missing
    assert not any(k.startswith(("sp.", "fc.", "cp.resnet.fc")) for k in keys)
    assert net.state_dict()["conv_out.conv_out.weight"].shape == (19, 256, 1, 1)
    assert net.state_dict()["cp.resnet.layer3.0.conv1.weight"].shape == (256, 128, 3, 3)


def test_loads_and_reproduces_the_saved_network(weights_file):
    path, net = weights_file
    loaded = load_bisenet(path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        np.testing.assert_allclose(loaded(x).numpy(), net.eval()(x).numpy(), rtol=1e-5, atol=1e-5)
    assert loaded(x).shape == (1, 19, 64, 64)


def test_dataparallel_prefix_and_bad_files(weights_file, tmp_path):
    path, net = weights_file
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, tmp_path / "dp.pth")
    assert isinstance(load_bisenet(tmp_path / "dp.pth"), BiSeNet)
    partial = dict(net.state_dict())
    partial.pop("ffm.conv1.weight")
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(ModelFileError, match="missing"):
        load_bisenet(tmp_path / "partial.pth")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(ModelFileError, match="junk.pth"):
        load_bisenet(tmp_path / "junk.pth")
    with pytest.raises(ModelFileError, match="not found"):
        load_bisenet(tmp_path / "nope.pth")


def test_parse_face_probabilities(weights_file):
    path, _ = weights_file
    img = np.random.default_rng(0).random((100, 80, 3)).astype(np.float32)
    prob = parse_face(img, path)
    assert prob.shape == (100, 80, 19)
    np.testing.assert_allclose(prob.sum(axis=2), 1.0, atol=1e-4)


def test_skin_mask_with_bisenet_backend(weights_file, ffhq_detections):
    from flamefit.observe.mask import skin_mask

    path, _ = weights_file
    _, img, det, _ = ffhq_detections[0]
    m = skin_mask(img, det.lmks_dense, backend="bisenet", bisenet_weights=path)
    assert m.shape == img.shape[:2] and m.dtype == np.float32
    assert 0.0 <= m.min() and m.max() <= 1.0
    far = np.zeros_like(m, bool)
    far[:5, :5] = True  # a corner far from the face stays out whatever the (random) network says
    assert m[far].max() == 0.0
