"""The fitter's configuration: one dataclass tree with documented defaults.

Load with :func:`load_config` (TOML or YAML file, then ``key.sub=value`` overrides as given by ``--set``) and save
the config actually used with :func:`save_config` next to the results. Unknown keys are an error (a typo must not
silently fall back to a default).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flamefit.errors import ConfigError


@dataclass
class StageConfig:
    """One optimisation stage: at most ``iters`` Adam iterations at learning rate ``lr`` (0 iterations skips the
    stage). ``resolution``: internal image side for the photometric stages (0: the fit's ``resolution``); a coarse
    stage before a fine one is cheaper per iteration. An item stops early when its loss improved by less than
    ``early_stop_rel`` (relative) over the last ``early_stop_patience`` iterations (0 patience: never).
    ``solver``: 'adam', or 'lm' (Levenberg-Marquardt, for the stages without rendering: rigid, landmarks; at most
    ``lm_iters`` iterations, each item stops when a step lowers its loss by less than ``lm_rel_tol`` (relative);
    a stage with a term that has no least-squares form, or with a parameter shared across the batch, runs Adam);
    ``lm_freeze``: parameters LM holds fixed in this stage (a converged landmark fit trades the global rotation
    against the neck's where Adam's few small steps do not: the landmark stage keeps the rigid stage's global
    pose and turns the head with the neck, under its prior)."""

    iters: int = 100
    lr: float = 0.01
    resolution: int = 0
    early_stop_patience: int = 0
    early_stop_rel: float = 1e-3
    solver: str = "adam"
    lm_iters: int = 30
    lm_rel_tol: float = 1e-3
    lm_freeze: tuple[str, ...] = ()


@dataclass
class LRScaleConfig:
    """Adam learning-rate multipliers per parameter (a stage's lr x this): parameters have very different scales
    (radians, metres, pixels, sd units)."""

    global_pose: float = 0.1
    neck_pose: float = 0.05
    jaw_pose: float = 0.2
    eye_pose: float = 0.2
    translation: float = 0.02
    cam_translation: float = 0.02
    focal_px: float = 100.0
    shape: float = 2.5
    expression: float = 2.5
    tex: float = 2.5
    light: float = 0.5
    tex_offset: float = 0.5


@dataclass
class OptimConfig:
    """The optimiser shared by all Adam stages."""

    adam_beta1: float = 0.9
    lr_final_fraction: float = 0.1  # cosine schedule from lr down to this fraction of it at the last iteration
    lr_scale: LRScaleConfig = field(default_factory=LRScaleConfig)


@dataclass
class InitConfig:
    """Initialisation without a network: PnP for the camera, damped linear least squares for shape/expression."""

    n_shape: int = 50  # identity components solved linearly from landmarks
    n_expr: int = 30  # expression components solved linearly
    damping_shape: float = 1e-2  # Tikhonov weight on shape (landmark residuals in units of the crop side)
    damping_expr: float = 1e-2
    gauss_newton_iters: int = 3  # PnP <-> linear-solve alternations


@dataclass
class CameraConfig:
    """Intrinsics. Single images barely constrain focal length, so by default it is fixed from a field of view."""

    # field of view of the longest side of the ORIGINAL image, when neither camera.focal_px nor EXIF gives the
    # focal: 40 sits between portrait lenses (~25) and phones/webcams (50-75); on ../shared/eval's stills (19-65
    # deg) 20 -> 40 gave 0.927 -> 0.870 mm (model file alone) and 0.935 -> 0.911 mm (with RingNet's 68), and its
    # clip (55 deg) 20.8 -> 16.7 mm whole-clip before the depth-smoothing fix
    fov_deg: float = 40.0
    # the same prior for videos (``flamefit track``): webcams and phones film at 50-75 deg. On ../shared/eval's
    # clip (55 deg, real detector, model file + texture space) the whole-clip error was 4.64 mm (photometric) /
    # 4.94 (landmarks) with 40, 3.58 / 4.09 with 60 (landmarks: 50 -> 4.64, 70 -> 5.57). Estimating it from the
    # landmarks over the identity frames was tried and is biased: MediaPipe's points look less perspective than
    # the image (the landmark loss fell monotonically from 75 to 25 deg on that clip)
    video_fov_deg: float = 60.0
    focal_px: float | None = None  # explicit focal of the original image (overrides EXIF and fov_deg)
    use_exif: bool = True  # a photo's EXIF FocalLengthIn35mmFilm gives its focal (over fov_deg) when present
    optimize_focal: bool = False


@dataclass
class WeightsConfig:
    """Loss weights. Landmark errors are measured in units of the crop size (fraction of the fitted image)."""

    lmk68: float = 100.0
    lmk68_contour: float = 0.3  # factor on the jaw-contour points 0..16 (ambiguous in non-frontal views)
    lmk_dense: float = 100.0  # MediaPipe 478 points, when a correspondence is available
    photo: float = 2.0  # robust photometric term on the skin mask
    eye_closure: float = 50.0  # upper-lower eyelid distance matches the detected one
    lip_distance: float = 50.0  # upper-lower lip distance matches the detected one
    shape_prior: float = 1e-4  # sum of squared coefficients (sd units)
    expr_prior: float = 1e-4
    jaw_prior: float = 1e-3
    # the jaw's sideways turn and roll (absolute weight on rad^2; see JawPriorTerm). 1.0 on stills: ../shared/eval
    # 0.879 -> 0.864 mm (mean 1.099 -> 1.051), but bench fit's detected column 1.774 -> 1.827 mm (mean 2.394 -> 2.351)
    # and its jaw-opening error 2.28 -> 2.51 mm, so 0 here; the tracker's windows use TrackConfig.jaw_lateral_prior
    jaw_lateral_prior: float = 0.0
    jaw_closed: float = 0.0  # the jaw closed past closed (opening < 0; absolute; 100 and 1e4 did worse on the clip)
    neck_prior: float = 1e-3
    eye_pose_prior: float = 1e-3
    tex_prior: float = 1e-4
    light_prior: float = 1e-4  # keeps non-DC SH small
    tex_offset_l2: float = 0.05
    tex_offset_smooth: float = 2.0
    tex_offset_symmetry: float = 0.2  # left-right symmetry of the offset/free albedo


@dataclass
class TextureConfig:
    """Appearance model. mode: 'auto' (texture space when one is given, else free albedo), 'pca', 'free'."""

    mode: str = "auto"
    n_tex: int = 50  # PCA components used (clipped to what the file has)
    free_resolution: int = 128  # texels per side of the free albedo / offset map
    fit_resolution: int = 128  # texture-space maps are resampled to this while fitting (0: keep); output is full
    skin_rgb: tuple[float, float, float] = (0.78, 0.60, 0.50)  # free-albedo initial colour (RGB 0..1)
    default_eyes: bool = True  # a free albedo's eyeballs start as an eye (sclera, iris, pupil), not skin (fit.eyes)
    light: str = "sh9x3"  # 'sh9' (shared by the channels) or 'sh9x3'
    offset: bool = True  # per-texel offset stage after the PCA fit
    free_offset_l2_factor: float = 0.1  # the offset IS the albedo of a free map: its L2 pull to skin_rgb is weaker
    smooth_reference_side: int = 100  # smoothness is scaled by (map side / this)^2: one weight for any map size
    light_ridge: float = 1e-3  # damping of the closed-form SH light start (relative to the normal matrix)


@dataclass
class FitConfig:
    """Fitting. Stages (see flamefit.fit.stages): rigid -> landmarks -> appearance (texture + light, geometry
    frozen) -> photometric_coarse (everything, lower resolution) -> photometric (everything) -> offset (texel offset
    on, geometry frozen)."""

    resolution: int = 224  # internal square fitting resolution (pixels)
    crop_scale: float = 1.7  # crop side = crop_scale * landmark bounding-box side
    n_shape: int = 100  # identity components optimised
    n_expr: int = 50  # expression components optimised
    robust_scale: float = 0.1  # photometric Geman-McClure scale (RGB units)
    photometric_landmark_scale: float = 1.0  # factor on the landmark terms during the photometric stage
    adam_beta2: float = 0.999  # Adam's second-moment decay
    rigid: StageConfig = field(default_factory=lambda: StageConfig(iters=30, lr=0.005, solver="lm"))
    landmarks: StageConfig = field(default_factory=lambda: StageConfig(iters=120, lr=0.02, solver="lm",
                                                                       lm_freeze=("global_pose",)))
    appearance: StageConfig = field(default_factory=lambda: StageConfig(iters=20, lr=0.05))
    # coarse-to-fine: the photometric stage first at a lower resolution (0 iterations: off)
    photometric_coarse: StageConfig = field(default_factory=lambda: StageConfig(iters=0, lr=0.05, resolution=160))
    # 100 at 0.1 after the LM landmark stage: as accurate as 150 at 0.05 (bench fit, 20 heads), a third fewer
    photometric: StageConfig = field(default_factory=lambda: StageConfig(iters=100, lr=0.1))
    offset: StageConfig = field(default_factory=lambda: StageConfig(iters=40, lr=0.01))
    texture_only: StageConfig = field(default_factory=lambda: StageConfig(iters=100, lr=0.01))  # fit-texture
    optim: OptimConfig = field(default_factory=OptimConfig)
    init: InitConfig = field(default_factory=InitConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    texture: TextureConfig = field(default_factory=TextureConfig)
    seed: int = 0  # unused: the fit draws no random numbers (kept so saved configs still load)


# -- loading / overriding / saving -----------------------------------------------------------------------------

def config_to_dict(cfg) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert a parsed value to the field's declared type (tolerating int for float, lists for tuples)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"config key `{key}`: {value!r} does not fit type {annotation}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or (args and args[-1] is not Ellipsis and len(value) != len(args)):
            raise ConfigError(f"config key `{key}`: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, args[0] if args else Any, key) for v in value)
    if annotation is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str):  # YAML 1.1 reads "1e-6" as a string
        try:
            return float(value)
        except ValueError:
            pass
    if annotation is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if annotation is bool and isinstance(value, bool):
        return value
    if annotation is str and isinstance(value, str):
        return value
    if annotation is Any:
        return value
    raise ConfigError(f"config key `{key}`: {value!r} is not a {getattr(annotation, '__name__', annotation)}")


def apply_dict(cfg, data: dict[str, Any], prefix: str = ""):
    """Return a copy of dataclass ``cfg`` with the nested ``data`` applied (unknown keys -> ConfigError)."""
    if not isinstance(data, dict):
        raise ConfigError(f"config section `{prefix or '<root>'}` must be a table/mapping, got {data!r}")
    hints = typing.get_type_hints(type(cfg))
    names = {f.name for f in dataclasses.fields(cfg)}
    updates = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"unknown config key `{full}`; known keys here: {sorted(names)}")
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current):
            updates[key] = apply_dict(current, value, prefix=f"{full}.")
        else:
            updates[key] = _coerce(value, hints[key], full)
    return dataclasses.replace(cfg, **updates)


def parse_override(text: str) -> dict[str, Any]:
    """``"weights.photo=3"`` -> ``{"weights": {"photo": 3}}`` (values parsed as YAML scalars/lists)."""
    import yaml

    if "=" not in text:
        raise ConfigError(f"override `{text}` must look like key.sub=value (e.g. landmarks.iters=50)")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override `{text}`: cannot parse value ({exc})") from exc
    out: dict[str, Any] = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The parsed TOML/YAML/JSON config file as a dict; ConfigError naming the file for anything unreadable."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass an existing .toml/.yaml file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start}: {exc.reason}); save it as "
                          "UTF-8 TOML or YAML") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        if path.suffix.lower() == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib
            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except RecursionError:
        raise ConfigError(f"cannot parse config file {path}: nested too deeply") from None
    except Exception as exc:  # noqa: BLE001 - any parse error becomes one clear message
        first = " ".join(str(exc).split())  # one line
        raise ConfigError(f"cannot parse config file {path}: {first}") from exc
    if data is None:  # an empty YAML file
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of keys (e.g. `photometric:` sections) at the top "
                          f"level, found a {type(data).__name__}")
    # A saved fit config may be wrapped as {"fit": {...}}; accept both.
    if set(data) == {"fit"}:
        data = data["fit"]
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> FitConfig:
    """Defaults, then the file (TOML/YAML/JSON), then ``key=value`` overrides, in that order."""
    cfg = FitConfig()
    if path is not None:
        cfg = apply_dict(cfg, read_config_file(path))
    for text in overrides:
        cfg = apply_dict(cfg, parse_override(text))
    validate_config(cfg)
    return cfg


def validate_config(cfg: FitConfig) -> None:
    """Raise one :class:`ConfigError` naming every invalid key, its value and the allowed range, before any work.

    The walk is generic (:mod:`flamefit.fit.config_check`): every number finite, ranges from the key's name
    (``*lr*`` > 0, ``weights.*`` >= 0, ``*iters*`` in [0, 100000], ``n_*`` >= 0 ...), known enums checked. A new
    field is covered by its name; add a specific rule or enum in config_check.RULES / ENUMS when it needs one.
    """
    from flamefit.fit.config_check import check_config

    check_config(cfg)


def save_config(cfg: FitConfig, path: str | Path) -> Path:
    """Write the config as YAML (readable back with :func:`load_config`)."""
    import yaml

    path = Path(path)
    data = json.loads(json.dumps(config_to_dict(cfg)))  # tuples -> lists
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path
