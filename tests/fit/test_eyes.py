"""A free albedo's default eye (flamefit.fit.eyes): the eyeball texels start as sclera, iris and pupil."""

import numpy as np
import torch

from flamefit.fit import eyes as E
from flamefit.fit.fitter import Fitter

from .conftest import fast_config


def test_eye_texels_are_the_eyeballs_with_the_iris_in_front(standin):
    model, lmk, _ = standin
    f = Fitter(model, texture_space=None, landmarks68=lmk, config=fast_config())
    lab = E.eye_texel_labels(model.v_template, model.faces, f.vt, f.ft, 128)
    counts = np.bincount(lab.ravel(), minlength=4)
    assert counts[E.SCLERA] > 200 and counts[E.IRIS] > 20 and counts[E.PUPIL] > 2, counts
    assert counts[E.SCLERA] > counts[E.IRIS] > counts[E.PUPIL]
    # the iris and pupil texels lie on the eyeballs' fronts: in FLAME's rest pose, in front of the head's eyeballs'
    # centres (+z), and the head's own texels are never labelled
    from flamefit.render.bake import rasterize_uv, texel_attributes

    uv = rasterize_uv(f.vt.float(), f.ft, 128)
    pos = texel_attributes(model.v_template[None].float(), model.faces, uv)[0].numpy()
    texel_lab = lab.ravel()[uv.texel.numpy()]
    comp = E.face_components(model.faces.numpy(), model.num_vertices)[uv.face.numpy()]
    head = np.bincount(comp).argmax()
    assert (texel_lab[comp == head] == E.NONE).all() and (texel_lab[comp != head] != E.NONE).all()
    eye_z = model.v_template[3931:, 2].mean().item()
    assert pos[texel_lab == E.PUPIL, 2].min() > eye_z and pos[texel_lab == E.SCLERA, 2].min() < eye_z


def test_free_albedo_starts_with_eyes_unless_told_not_to(standin):
    model, lmk, _ = standin
    with_eyes = Fitter(model, texture_space=None, landmarks68=lmk, config=fast_config())
    without = Fitter(model, texture_space=None, landmarks68=lmk, config=fast_config("texture.default_eyes=false"))
    m1, m0 = with_eyes.texture_space.mean, without.texture_space.mean
    lab = torch.as_tensor(E.eye_texel_labels(model.v_template, model.faces, with_eyes.vt, with_eyes.ft, m1.shape[0]))
    skin = torch.tensor(with_eyes.cfg.texture.skin_rgb, dtype=m1.dtype)
    assert torch.allclose(m0, skin.expand_as(m0))  # flat skin everywhere
    assert torch.allclose(m1[lab == E.NONE], skin.expand_as(m1[lab == E.NONE]))
    assert torch.allclose(m1[lab == E.PUPIL], torch.tensor(E.PUPIL_RGB, dtype=m1.dtype).expand_as(m1[lab == E.PUPIL]))
    assert m1[lab == E.SCLERA].mean() > skin.mean() > m1[lab == E.IRIS].mean()
    assert with_eyes.full_texture_space.mean is m1  # results draw the same map
