import numpy as np
import torch

from flamefit.fit.params import FlameParams


def test_zeros_detach_to_dict_roundtrip():
    p = FlameParams.zeros(2, 10, 5, n_tex=3, focal_px=800.0, principal_px=(100.0, 120.0))
    assert p.shape.shape == (2, 10) and p.light.shape == (2, 9, 3) and p.eye_pose.shape == (2, 6)
    K = p.intrinsics()
    assert torch.allclose(K[0], torch.tensor([[800.0, 0, 100], [0, 800, 120], [0, 0, 1]]))
    # cam_rotation is the FLAME -> OpenCV flip: y and z change sign
    from flamefit.model.lbs import axis_angle_to_matrix

    assert torch.allclose(axis_angle_to_matrix(p.cam_rotation[:1])[0], torch.diag(torch.tensor([1.0, -1, -1])),
                          atol=1e-6)
    leaves = p.requires_grad_(["shape", "tex"])
    assert all(t.requires_grad for t in leaves)
    d = p.detach()
    assert not d.shape.requires_grad and d.shape is not p.shape
    arrays = p.to_dict()
    assert set(arrays) >= {"shape", "expression", "cam_translation", "light"} and "tex_offset" not in arrays
    back = FlameParams.from_dict(arrays)
    assert np.allclose(back.principal_px.numpy(), p.principal_px.detach().numpy())
    assert p.to(torch.float64).shape.dtype == torch.float64
