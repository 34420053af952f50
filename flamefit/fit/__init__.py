"""Batched photometric FLAME fitting (rigid -> landmarks -> appearance -> photometric -> texel offset).

Public API: :func:`build_fitter`, :func:`fit_image`, :func:`fit_images`, :func:`fit_texture`, :class:`Fitter`,
:class:`FitTarget`, :class:`FitResult`, :class:`FlameParams`, :class:`FitConfig`, :func:`load_config` and
:class:`Sharing` (which parameters a batch shares).
"""

from flamefit.fit.api import build_fitter, fit_image, fit_images, fit_texture
from flamefit.fit.config import FitConfig, load_config, save_config
from flamefit.fit.fitter import Fitter
from flamefit.fit.optimize import Sharing
from flamefit.fit.params import FlameParams
from flamefit.fit.result import FitResult, make_result
from flamefit.fit.targets import FitTarget

__all__ = [
    "FitConfig",
    "FitResult",
    "FitTarget",
    "Fitter",
    "FlameParams",
    "Sharing",
    "build_fitter",
    "fit_image",
    "fit_images",
    "fit_texture",
    "load_config",
    "make_result",
    "save_config",
]
