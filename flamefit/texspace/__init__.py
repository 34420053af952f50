"""Texture spaces from photos (issue 11): unwrap -> complete -> PCA, on top of fit, render and model.

Modules (plain tensors in and out; maps are channels-last (N,H,W,3) RGB 0..1, texel row 0 = v 1):

* :mod:`~flamefit.texspace.unwrap`: a fitted photo -> de-lit albedo map + per-texel weight
  (``unwrap_albedo``, ``unwrap_fit``), built on the UV bake ``flamefit.render.bake``;
* :mod:`~flamefit.texspace.strokes`: DeepFill v2-style free-form strokes (training and held-out masks);
* :mod:`~flamefit.texspace.inpaint`: the gated-convolution inpainting U-Net: ``train_inpainter`` (seeded,
  checkpoints, resume), ``load_inpainter``, ``inpaint_maps``;
* :mod:`~flamefit.texspace.fills`: classical fills (OpenCV, mirror, push-pull, projection onto a space, chains)
  and ``evaluate_fills`` (PSNR on held-out strokes);
* :mod:`~flamefit.texspace.pca`: ``fit_pca``, ``fit_pca_missing`` (EM-PCA: unseen texels are missing data, not
  fills) and the ``FLAME_texture.npz`` writer, preview grids;
* :mod:`~flamefit.texspace.synthetic`: a made-up known space, ``reconstruction_rms`` and ``face_texels`` (the
  recovery benchmark);
* :mod:`~flamefit.texspace.measure`: the inpainting and recovery measurements (``python -m``).

Submodules are imported on use (``from flamefit.texspace.pca import fit_pca``): OpenCV and the network are not
loaded by ``import flamefit.texspace``.
"""
