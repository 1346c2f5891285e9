"""The exported model bundle: a directory with `model.json`, ONNX graphs, a SavedModel and the priors.

`model.json` (format `shapemask_ros.bundle/1`) is the contract between export and the runtime, typed once as
`BundleMeta` (export writes `BundleMeta.to_json()`, the runtime reads `BundleMeta.from_json`). The fields it
shares with a loaded `Bundle` (input size, classes, mask form, limits) are declared once, in `ModelSpec`, which
both extend; `from_model_config` fills them from a ModelConfig (export, and the in-memory Keras backend):

    {"format": "shapemask_ros.bundle/1", "image_size": S, "class_names": [...], "num_classes": C,
     "mask_class_agnostic": bool, "max_boxes": 100, "mask_size": 128, "score_threshold": 0.05,
     "onnx": {"segment_boxes": "segment_boxes.onnx", "detect_and_segment": "detect_and_segment.onnx"},
     "saved_model": "saved_model", "priors": "priors.npy", "preprocessing": "...", "created_by": ...,
     "onnx_weights": "fp32" | "fp16" | "int8", "quantization": {...}}

`onnx_weights` is informational (the runtime needs nothing from it): "fp16" bundles store their ONNX weights
as float16 initializers cast to float32 inside the graph (`shapemask_ros.export.onnx_weights`); "int8"
bundles are QDQ graphs made by `shapemask quantize` (`shapemask_ros.export.quantize`), whose
`quantization` record says how (calibration data, activation type, what stayed float).

`Bundle.read` checks every field (`BundleMeta.from_json`) and resolves the file names against the bundle
directory (local or gs://, read through `shapemask_ros.utils.io`). A bundle may leave out either the ONNX graphs or the
SavedModel (set to null / omitted), but every file it names must exist, and at least one complete set of
model files must be present. The priors are weights inside the model; a missing priors file only warns.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from shapemask_ros.config.model_config import ModelConfig, PostprocessConfig
from shapemask_ros.utils import io

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "shapemask_ros.bundle/1"
# the model's default (config/model_config.py), also what a model.json without a score_threshold gets
DEFAULT_SCORE_THRESHOLD: float = PostprocessConfig.score_threshold
MODEL_JSON = "model.json"
SIGNATURES: tuple[str, ...] = ("segment_boxes", "detect_and_segment")
ONNX_WEIGHTS: tuple[str, ...] = ("fp32", "fp16", "int8")
# The shipped default model (models/<name>, installed to share/shapemask_ros/models/<name>): the node,
# the launch file, bag-eval, predict and the demo use it when no model is given.
DEFAULT_MODEL = "real_lite0"


def default_model_dir(name: str = DEFAULT_MODEL) -> str:
    """The shipped bundle `name`: <share>/shapemask_ros/models/<name> in a ROS install, else the source
    tree's models/<name> (pip -e / a checkout)."""
    import os
    from pathlib import Path

    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            return os.path.join(get_package_share_directory("shapemask_ros"), "models", name)
        except PackageNotFoundError:
            pass
    except ImportError:
        pass
    return str(Path(__file__).resolve().parents[2] / "models" / name)


def resolve_model_path(model_path: str) -> str:
    """`model_path` (user home expanded), or the shipped default bundle when it is empty."""
    if model_path:
        import os

        return os.path.expanduser(model_path)
    return default_model_dir()


def _join(root: str, name: str) -> str:
    """Resolve `name` against the bundle directory (absolute names and URLs are kept)."""
    if io.is_remote(name) or posixpath.isabs(name):
        return name
    return posixpath.join(root.rstrip("/"), name)


_Spec = TypeVar("_Spec", bound="ModelSpec")


@dataclass(frozen=True)
class ModelSpec:
    """What the exported graphs were built for and how their outputs are read: the fields `model.json` records
    (`BundleMeta`) and a loaded `Bundle` carries, declared once."""

    image_size: int
    class_names: tuple[str, ...]
    num_classes: int
    mask_class_agnostic: bool
    max_boxes: int = 100
    mask_size: int = 128
    score_threshold: float = DEFAULT_SCORE_THRESHOLD

    @classmethod
    def from_model_config(
        cls: type[_Spec], cfg: ModelConfig, class_names: Sequence[str], *, max_boxes: int = 100, **fields: Any
    ) -> _Spec:
        """The spec of a model built from `cfg` (its input size, classes, mask form and score threshold), with
        the subclass's own `fields` (a BundleMeta's files, a Bundle's path)."""
        return cls(
            image_size=cfg.image_size,
            class_names=tuple(class_names),
            num_classes=cfg.detector.num_classes,
            mask_class_agnostic=cfg.mask.class_agnostic,
            max_boxes=max_boxes,
            mask_size=cfg.mask.crop_size * cfg.mask.upsample_factor,
            score_threshold=cfg.postprocess.score_threshold,
            **fields,
        )

    def spec_fields(self) -> dict[str, Any]:
        """The ModelSpec fields of this object by name (to build another kind of spec from it)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(ModelSpec)}


@dataclass(frozen=True)
class BundleMeta(ModelSpec):
    """The contents of `model.json`, the one type export writes (`to_json`) and the runtime reads (`from_json`).

    File names are as written (relative to the bundle directory); `Bundle` resolves them. Keys this type does
    not name (`category_ids`, an exporter's `extra`) are kept in `extra`, so a round trip loses nothing."""

    opset: int | None = None
    preprocessing: str | None = None
    model_config: dict[str, Any] | None = None
    created_by: Any = None
    priors: str | None = None
    saved_model: str | None = None
    onnx: dict[str, str] | None = None  # signature -> file name
    onnx_weights: str | None = None  # "fp32" | "fp16" | "int8"; None = not recorded (read as "fp32")
    quantization: dict[str, Any] | None = None  # how an int8 bundle was made
    extra: dict[str, Any] = field(default_factory=dict)

    # the order export has always written; optional fields that are None are left out
    _KEYS: ClassVar[tuple[str, ...]] = (
        "image_size",
        "class_names",
        "num_classes",
        "mask_class_agnostic",
        "max_boxes",
        "mask_size",
        "score_threshold",
        "opset",
        "preprocessing",
        "model_config",
        "created_by",
        "priors",
        "saved_model",
        "onnx",
        "onnx_weights",
    )

    def to_json(self) -> dict[str, Any]:
        """The `model.json` object (key order as export writes it; None-valued optional keys left out)."""
        out: dict[str, Any] = {"format": BUNDLE_FORMAT}
        for key in self._KEYS:
            value = getattr(self, key)
            if value is not None:
                out[key] = list(value) if key == "class_names" else value
        out.update(self.extra)  # extra keys may also replace a field's value, in that field's place
        if self.quantization is not None:
            out["quantization"] = self.quantization
        return out

    @staticmethod
    def from_json(meta: dict[str, Any], meta_path: str = MODEL_JSON) -> BundleMeta:
        """Validate a parsed `model.json` (named `meta_path` in errors). ValueError with the reason."""
        fmt = meta.get("format")
        if fmt != BUNDLE_FORMAT:
            raise ValueError(
                f"{meta_path}: unsupported bundle format {fmt!r} (this runtime reads {BUNDLE_FORMAT!r}); "
                "re-export the model with this version of shapemask_ros"
            )

        def get(key: str, types: type | tuple[type, ...], default: Any = ...) -> Any:
            if key not in meta:
                if default is ...:
                    raise ValueError(f"{meta_path}: missing required field '{key}'")
                return default
            value = meta[key]
            # bool is an int subclass: never accept it where a number is meant
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in _as_tuple(types)):
                raise ValueError(f"{meta_path}: field '{key}' has the wrong type ({value!r})")
            return value

        image_size = get("image_size", int)
        num_classes = get("num_classes", int)
        max_boxes = get("max_boxes", int, 100)
        mask_size = get("mask_size", int, 128)
        for key, value in (
            ("image_size", image_size),
            ("num_classes", num_classes),
            ("max_boxes", max_boxes),
            ("mask_size", mask_size),
        ):
            if value <= 0:
                raise ValueError(f"{meta_path}: field '{key}' must be positive, got {value}")
        class_names = get("class_names", list)
        if not all(isinstance(n, str) for n in class_names):
            raise ValueError(f"{meta_path}: 'class_names' must be a list of strings")
        if len(class_names) != num_classes:
            raise ValueError(f"{meta_path}: {len(class_names)} class_names but num_classes = {num_classes}")
        agnostic = get("mask_class_agnostic", bool)
        score_threshold = float(get("score_threshold", (int, float), DEFAULT_SCORE_THRESHOLD))

        model_config = meta.get("model_config")
        _check_model_config(meta_path, model_config, image_size, num_classes, agnostic, mask_size)
        onnx = get("onnx", (dict, type(None)), None)
        for sig, name in (onnx or {}).items():
            if sig not in SIGNATURES:
                raise ValueError(f"{meta_path}: unknown ONNX signature {sig!r}; expected {SIGNATURES}")
            if not isinstance(name, str) or not name:
                raise ValueError(f"{meta_path}: onnx.{sig} must be a file name")
        saved_model = get("saved_model", (str, type(None)), None)
        priors = get("priors", (str, type(None)), None)
        onnx_weights = get("onnx_weights", str, None)
        if onnx_weights is not None and onnx_weights not in ONNX_WEIGHTS:
            raise ValueError(f"{meta_path}: 'onnx_weights' must be one of {ONNX_WEIGHTS}, got {onnx_weights!r}")
        preprocessing = meta.get("preprocessing")
        return BundleMeta(
            image_size=image_size,
            class_names=tuple(class_names),
            num_classes=num_classes,
            mask_class_agnostic=agnostic,
            max_boxes=max_boxes,
            mask_size=mask_size,
            score_threshold=score_threshold,
            opset=meta.get("opset"),
            preprocessing=None if preprocessing is None else str(preprocessing),
            model_config=model_config,
            created_by=meta.get("created_by"),
            priors=priors,
            saved_model=saved_model,
            onnx=onnx,
            onnx_weights=onnx_weights,
            quantization=get("quantization", (dict, type(None)), None),
            extra={k: v for k, v in meta.items() if k not in _NAMED_KEYS},
        )

    def check_complete(self, meta_path: str = MODEL_JSON) -> None:
        """ValueError unless the bundle names both ONNX graphs, or none and a SavedModel."""
        if self.onnx and not all(s in self.onnx for s in SIGNATURES):
            raise ValueError(f"{meta_path}: 'onnx' must name both {SIGNATURES}, got {sorted(self.onnx)}")
        if not self.onnx and not self.saved_model:
            raise ValueError(f"{meta_path}: the bundle names neither ONNX graphs nor a SavedModel")


_NAMED_KEYS = frozenset(("format", "quantization", *BundleMeta._KEYS))


@dataclass(frozen=True, kw_only=True)
class Bundle(ModelSpec):
    """A validated model bundle. Paths are resolved (absolute, or remote URLs); None = not shipped."""

    path: str
    onnx: dict[str, str] = field(default_factory=dict)  # signature -> resolved .onnx path
    saved_model: str | None = None
    priors: str | None = None
    preprocessing: str = ""
    created_by: Any = None
    onnx_weights: str = "fp32"  # "fp32" | "fp16" | "int8" (informational, see the module docstring)
    quantization: dict[str, Any] | None = None  # how an int8 bundle was made

    @property
    def has_onnx(self) -> bool:
        return all(s in self.onnx for s in SIGNATURES)

    @property
    def has_saved_model(self) -> bool:
        return self.saved_model is not None

    def onnx_path(self, signature: str) -> str:
        """Resolved path of the ONNX graph for `signature`; a clear error when the bundle has none."""
        if signature not in SIGNATURES:
            raise ValueError(f"unknown signature {signature!r}; expected one of {SIGNATURES}")
        if signature not in self.onnx:
            raise FileNotFoundError(
                f"model bundle {self.path} has no ONNX graph for '{signature}' (model.json 'onnx' entry); "
                "re-export the model with ONNX output or use backend='tensorflow'"
            )
        return self.onnx[signature]

    @staticmethod
    def read(path: str) -> Bundle:
        """Read and validate `<path>/model.json`. Raises FileNotFoundError / ValueError with the reason."""
        path = str(path)
        if path.endswith(MODEL_JSON):
            path = posixpath.dirname(path) or "."
        meta_path = _join(path, MODEL_JSON)
        if not io.exists(path):
            raise FileNotFoundError(f"model bundle directory not found: {path}")
        if not io.exists(meta_path):
            raise FileNotFoundError(
                f"{meta_path} not found: {path} is not a shapemask_ros model bundle "
                "(expected a directory written by the export step, containing model.json)"
            )
        try:
            meta = json.loads(io.read_text(meta_path))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{meta_path}: not valid JSON ({e})") from e
        if not isinstance(meta, dict):
            raise ValueError(f"{meta_path}: top level must be a JSON object")
        return Bundle.from_meta(path, BundleMeta.from_json(meta, meta_path), meta_path)

    @staticmethod
    def from_meta(path: str, meta: BundleMeta, meta_path: str = MODEL_JSON) -> Bundle:
        """The bundle in directory `path` described by `meta`: file names resolved, named files checked."""
        onnx = {sig: _join(path, name) for sig, name in (meta.onnx or {}).items()}
        saved_model = _join(path, meta.saved_model) if meta.saved_model else None
        priors = _join(path, meta.priors) if meta.priors else None

        missing = [p for p in [*onnx.values(), *([saved_model] if saved_model else [])] if not io.exists(p)]
        if missing:
            raise FileNotFoundError(f"model bundle {path}: files named in model.json are missing: {missing}")
        if priors and not io.exists(priors):
            log.warning("model bundle %s: priors file %s is missing (not needed for inference)", path, priors)
        elif priors:
            check_priors_file(priors, 1 if meta.mask_class_agnostic else meta.num_classes)
        meta.check_complete(meta_path)

        return Bundle(
            path=path,
            **meta.spec_fields(),
            onnx=onnx,
            saved_model=saved_model,
            priors=priors,
            preprocessing=meta.preprocessing or "",
            created_by=meta.created_by,
            onnx_weights=meta.onnx_weights or "fp32",
            quantization=meta.quantization,
        )


def _check_model_config(
    meta_path: str, cfg: Any, image_size: int, num_classes: int, agnostic: bool, mask_size: int
) -> None:
    """The top-level fields must agree with the `model_config` the graphs were exported from (a hand-edited
    or mixed-up model.json otherwise fails later, deep inside a backend, or silently mislabels classes)."""
    if not isinstance(cfg, dict):
        return  # older bundles: nothing to compare with
    try:
        truth = {
            "image_size": cfg["image_size"],
            "num_classes": cfg["detector"]["num_classes"],
            "mask_class_agnostic": cfg["mask"]["class_agnostic"],
            "mask_size": cfg["mask"]["crop_size"] * cfg["mask"]["upsample_factor"],
        }
    except (KeyError, TypeError):
        return
    given = {
        "image_size": image_size,
        "num_classes": num_classes,
        "mask_class_agnostic": agnostic,
        "mask_size": mask_size,
    }
    bad = [f"{k} = {given[k]!r} but the exported model has {v!r}" for k, v in truth.items() if given[k] != v]
    if bad:
        raise ValueError(
            f"{meta_path} does not match the graphs it ships ({'; '.join(bad)}): copy the bundle again or "
            "re-export it (`shapemask export`)"
        )


def check_priors_file(path: str, rows: int) -> None:
    """ValueError (one line: the file, what is wrong, the fix) unless `path` holds float priors
    [rows, K, S, S] in [0, 1]. The graphs carry the priors as weights, so a bad file means a damaged or
    mixed-up bundle (another model's priors, a truncated copy) rather than a runtime problem."""
    import numpy as np

    fix = (
        f"copy the bundle again or re-export it (`shapemask export`); priors must be float [{rows}, K, S, S] "
        "in [0, 1] (`shapemask priors`)"
    )
    try:
        arr = io.load_npy(path)
    except Exception as e:  # truncated/garbage (ValueError, EOFError, OSError), pickled object arrays
        first = (str(e).strip().splitlines() or [""])[0]
        raise ValueError(f"{path}: not a readable .npy ({type(e).__name__}: {first}); {fix}") from None
    if arr.ndim != 4 or arr.shape[0] != rows or arr.shape[2] != arr.shape[3] or 0 in arr.shape:
        raise ValueError(f"{path}: priors of shape {list(arr.shape)} do not match model.json; {fix}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{path}: priors of dtype {arr.dtype}; {fix}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{path}: priors contain {int((~np.isfinite(arr)).sum())} NaN/inf values; {fix}")
    if arr.min() < 0 or arr.max() > 1:
        raise ValueError(f"{path}: priors outside [0, 1] ({arr.min():.3g}..{arr.max():.3g}); {fix}")


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)
