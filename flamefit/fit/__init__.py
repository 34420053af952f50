"""Single-image photometric FLAME fitting (rigid -> landmarks -> photometric -> texel offset).

Public API: :func:`build_fitter`, :func:`fit_image`, :func:`fit_texture`, :class:`Fitter`, :class:`FitTarget`,
:class:`FitResult`, :class:`FlameParams`, :class:`FitConfig` and :func:`load_config`.
"""

from flamefit.fit.api import build_fitter, fit_image, fit_texture
from flamefit.fit.config import FitConfig, load_config, save_config
from flamefit.fit.fitter import FitTarget, Fitter
from flamefit.fit.params import FlameParams
from flamefit.fit.result import FitResult, make_result

__all__ = [
    "FitConfig",
    "FitResult",
    "FitTarget",
    "Fitter",
    "FlameParams",
    "build_fitter",
    "fit_image",
    "fit_texture",
    "load_config",
    "make_result",
    "save_config",
]
