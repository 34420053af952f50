"""A default eye for a free albedo: without a texture space the albedo starts flat skin-coloured everywhere, and the
eyeballs, which a photo shows only through the eyelids' slit, stay close to that start: blank skin-coloured ovals
in every render. Painting the start's eyeball texels as an eye (sclera, iris, pupil) gives the photometric stages
and the renders an eye to start from; the texel offset still fits what the photo shows.

The eyeballs are the mesh's components other than the largest (the head), as in FLAME. A texel is iris or pupil by
the angle between its rest-pose direction from its eyeball's centre and the gaze (+z, FLAME's forward).
"""

from __future__ import annotations

import math

import numpy as np
import torch

SCLERA_RGB = (0.86, 0.82, 0.78)
IRIS_RGB = (0.36, 0.26, 0.18)  # a mid brown
PUPIL_RGB = (0.04, 0.03, 0.03)
# half-angles seen from the eyeball's centre: a 12 mm eyeball with a ~11.5 mm iris and a ~4 mm pupil
IRIS_HALF_ANGLE_RAD = math.asin(5.75 / 12.0)
PUPIL_HALF_ANGLE_RAD = math.asin(2.0 / 12.0)

NONE, SCLERA, IRIS, PUPIL = 0, 1, 2, 3


def face_components(faces: np.ndarray, n_vertices: int) -> np.ndarray:
    """(F,) the connected component of each face (faces joined through shared vertices)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    F = np.asarray(faces, np.int64)
    g = coo_matrix((np.ones(F.size), (F.ravel(), F[:, [1, 2, 0]].ravel())), shape=(n_vertices, n_vertices))
    return connected_components(g, directed=False)[1][F[:, 0]]


def eye_texel_labels(v_rest: torch.Tensor, faces: torch.Tensor, vt: torch.Tensor, ft: torch.Tensor,
                     size: int) -> np.ndarray:
    """(size,size) int8 labels of a UV map's texels: NONE (not an eyeball), SCLERA, IRIS, PUPIL. ``v_rest`` (V,3)
    the rest-pose vertices, ``faces``/``ft`` (F,3) the mesh's and the UV layout's faces, ``vt`` (T,2)."""
    from flamefit.render.bake import rasterize_uv, texel_attributes

    F = faces.cpu().numpy().astype(np.int64)
    P = v_rest.detach().cpu().double()
    comp = face_components(F, P.shape[0])
    ids, counts = np.unique(comp, return_counts=True)
    labels = np.zeros(size * size, np.int8)
    if len(ids) < 2:  # one component: no separate eyeballs to paint
        return labels.reshape(size, size)
    head = ids[np.argmax(counts)]
    centre = np.zeros((int(comp.max()) + 1, 3))
    for c in ids:
        if c != head:
            centre[c] = P[np.unique(F[comp == c])].mean(0).numpy()
    uv = rasterize_uv(vt.detach().cpu().float(), ft.cpu(), size)
    face = uv.face.cpu().numpy()
    eye = comp[face] != head
    pos = texel_attributes(P[None].float(), faces.cpu(), uv)[0].double().numpy()
    d = pos - centre[comp[face]]
    cos_gaze = d[:, 2] / np.maximum(np.linalg.norm(d, axis=1), 1e-12)
    lab = np.where(cos_gaze > math.cos(PUPIL_HALF_ANGLE_RAD), PUPIL,
                   np.where(cos_gaze > math.cos(IRIS_HALF_ANGLE_RAD), IRIS, SCLERA)).astype(np.int8)
    texel = uv.texel.cpu().numpy()
    labels[texel[eye]] = lab[eye]
    return labels.reshape(size, size)


def paint_default_eyes(albedo: torch.Tensor, labels: np.ndarray) -> torch.Tensor:
    """``albedo`` (Ht,Wt,3) with its eyeball texels painted (a new tensor)."""
    out = albedo.clone()
    lab = torch.as_tensor(labels, device=albedo.device)
    for k, rgb in ((SCLERA, SCLERA_RGB), (IRIS, IRIS_RGB), (PUPIL, PUPIL_RGB)):
        out[lab == k] = torch.tensor(rgb, dtype=albedo.dtype, device=albedo.device)
    return out
