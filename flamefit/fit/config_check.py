"""Validation of the fit config (called by :func:`flamefit.fit.config.validate_config`) before any work.

The dataclass tree is walked generically, so a field added later is covered without touching this file:

* every number must be finite (NaN/inf are refused everywhere);
* numbers get a range from their name (first matching rule in :data:`RULES`, on the dotted key): learning
  rates (``*lr*``) > 0, ``weights.*`` >= 0, iteration counts (``*iters*``) in [0, 100000], component counts
  (``n_*``) in [0, 10000], resolutions, fractions, betas, dampings, priors, scales ...;
* strings with a known set of values (:data:`ENUMS`) are checked against it.

A new field whose name fits none of the rules is only checked for finiteness: give it a name that says what it
is (``*_lr``, ``*_iters``, ``*_weight`` ...) or add a rule here. Every error names the key, the value and the
allowed range; all errors found are reported at once.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from flamefit.errors import ConfigError

MAX_ITERS = 100_000
MAX_COMPONENTS = 10_000
MAX_RESOLUTION_PX = 4096


@dataclass(frozen=True)
class Range:
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False  # True: lo itself is not allowed
    hi_open: bool = False
    integer: bool = False  # the value must be a whole number
    what: str = ""

    def ok(self, x: float) -> bool:
        if self.integer and float(x) != int(x):
            return False
        if self.lo is not None and (x < self.lo or (self.lo_open and x == self.lo)):
            return False
        return not (self.hi is not None and (x > self.hi or (self.hi_open and x == self.hi)))

    def describe(self) -> str:
        def num(v: float) -> str:
            return f"{v:g}"

        if self.lo is not None and self.hi is not None:
            text = f"{'(' if self.lo_open else '['}{num(self.lo)}, {num(self.hi)}{')' if self.hi_open else ']'}"
            text = f"in {text}"
        elif self.lo is not None:
            text = f"{'>' if self.lo_open else '>='} {num(self.lo)}"
        elif self.hi is not None:
            text = f"{'<' if self.hi_open else '<='} {num(self.hi)}"
        else:
            text = "finite"
        if self.integer:
            text = f"a whole number {text}"
        return f"{text} ({self.what})" if self.what else text


POSITIVE = Range(0.0, None, lo_open=True)
NON_NEGATIVE = Range(0.0, None)

# (glob on the dotted key, allowed range): the first match wins. Specific keys first, naming conventions after.
RULES: list[tuple[str, Range]] = [
    ("camera.fov_deg", Range(0.0, 180.0, lo_open=True, hi_open=True, what="field of view in degrees")),
    ("camera.video_fov_deg", Range(0.0, 180.0, lo_open=True, hi_open=True, what="field of view in degrees")),
    ("camera.focal_px", Range(0.0, None, lo_open=True, what="focal length in pixels, or null for fov_deg")),
    ("resolution", Range(32, MAX_RESOLUTION_PX, integer=True, what="fitting image side in pixels")),
    ("crop_scale", Range(0.5, 10.0, what="crop side / landmark box side")),
    ("robust_scale", Range(0.0, None, lo_open=True, what="photometric robust scale, RGB units")),
    ("texture.free_resolution", Range(8, MAX_RESOLUTION_PX, integer=True, what="texels per side")),
    ("texture.smooth_reference_side", Range(0.0, None, lo_open=True, what="texels per side")),
    ("texture.skin_rgb*", Range(0.0, 1.0, what="RGB 0..1")),
    ("seed", Range(what="any whole number")),
    # naming conventions
    ("*resolution*", Range(0, MAX_RESOLUTION_PX, integer=True, what="pixels; 0 = the default")),
    ("*iters*", Range(0, MAX_ITERS, integer=True, what="iteration count")),
    ("*patience*", Range(0, MAX_ITERS, integer=True, what="iterations; 0 = never")),
    ("n_*", Range(0, MAX_COMPONENTS, integer=True, what="component count")),
    ("*.n_*", Range(0, MAX_COMPONENTS, integer=True, what="component count")),
    ("*lr_scale*", Range(0.0, None, what="learning-rate multiplier; 0 freezes the parameter")),
    ("*fraction*", Range(0.0, 1.0, what="fraction")),
    ("*lr*", Range(0.0, 10.0, lo_open=True, what="learning rate")),
    ("*beta*", Range(0.0, 1.0, hi_open=True, what="Adam moment decay")),
    ("weights.*", Range(0.0, None, what="loss weight")),
    ("*weight*", Range(0.0, None, what="weight")),
    ("*damping*", Range(0.0, None, what="damping")),
    ("*ridge*", Range(0.0, None, what="damping")),
    ("*prior*", Range(0.0, None, what="prior weight")),
    ("*factor*", Range(0.0, None, what="factor")),
    ("*scale*", Range(0.0, None, what="scale")),
    ("*early_stop_rel*", Range(0.0, None, what="relative loss improvement")),
    ("*lm_rel_tol*", Range(0.0, None, what="relative loss improvement")),
]

ENUMS: dict[str, tuple[str, ...]] = {
    "texture.mode": ("auto", "pca", "free"),
    "texture.light": ("sh9", "sh9x3"),
    "*.solver": ("adam", "lm"),  # globs allowed (first exact key, then the first matching pattern)
}

# stages that render: Levenberg-Marquardt (finite-difference Jacobians) is for the landmark stages only
RENDERING_STAGES = ("appearance", "photometric_coarse", "photometric", "offset", "texture_only")


def rule_for(key: str) -> Range | None:
    """The range rule for dotted ``key`` (None: only finiteness is checked)."""
    for pattern, rng in RULES:
        if fnmatchcase(key, pattern):
            return rng
    return None


def check_config(cfg: Any) -> None:
    """Raise one :class:`ConfigError` listing every invalid value of the config tree ``cfg`` (a dataclass)."""
    errors: list[str] = []
    _walk(cfg, "", errors)
    from flamefit.fit.params import FlameParams

    fields = [f.name for f in dataclasses.fields(FlameParams) if f.name != "extras"]
    for name in ("rigid", "landmarks") + RENDERING_STAGES:
        bad = [f for f in getattr(getattr(cfg, name, None), "lm_freeze", ()) if f not in fields]
        if bad:
            errors.append(f"`{name}.lm_freeze` names unknown parameters {bad}; parameters are {', '.join(fields)}")
    for name in RENDERING_STAGES:
        if getattr(getattr(cfg, name, None), "solver", "adam") == "lm":
            errors.append(f"`{name}.solver` = 'lm' is only for the stages without rendering (rigid, landmarks); "
                          "use 'adam'")
    if errors:
        count = f" ({len(errors)} problems)" if len(errors) > 1 else ""
        raise ConfigError(f"invalid config{count}: " + "; ".join(errors))


def _walk(node: Any, key: str, errors: list[str]) -> None:
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        for f in dataclasses.fields(node):
            _walk(getattr(node, f.name), f"{key}.{f.name}" if key else f.name, errors)
    elif isinstance(node, dict):
        for k, v in node.items():
            _walk(v, f"{key}.{k}", errors)
    elif isinstance(node, (list, tuple)):
        for item in node:
            _walk(item, key, errors)  # elements share their field's rule
    else:
        _check_leaf(node, key, errors)


def _check_leaf(value: Any, key: str, errors: list[str]) -> None:
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        allowed = ENUMS.get(key)
        if allowed is None:
            allowed = next((v for k, v in ENUMS.items() if "*" in k and fnmatchcase(key, k)), None)
        if allowed is not None and value not in allowed:
            errors.append(f"`{key}` = {value!r} is not one of {', '.join(repr(a) for a in allowed)}")
        return
    if not isinstance(value, (int, float)):
        return
    rng = rule_for(key)
    if isinstance(value, float) and not math.isfinite(value):
        errors.append(f"`{key}` = {value!r} must be a finite number"
                      + (f", {rng.describe()}" if rng is not None else ""))
        return
    if rng is not None and not rng.ok(value):
        errors.append(f"`{key}` = {value!r} is out of range; allowed: {rng.describe()}")
