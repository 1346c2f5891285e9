"""`Predictor`: image (+ optional boxes) in, `Instances` out -- the one entry point of the runtime.

Everything around the model lives here and is shared by all backends: input validation, letterbox,
box scaling into model-input pixels, chunking of large box sets into <= max_boxes calls, mapping outer
boxes back to image pixels, and mask pasting. Backends only run the exported graphs.
"""

from __future__ import annotations

import collections
import logging
import os
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from shapemask_ros.config.node_config import NodeConfig
from shapemask_ros.ops.box_ops import flip_boxes_lr
from shapemask_ros.runtime.backends import Backend, BackendOptions, create_backend
from shapemask_ros.runtime.backends.base import SegmentFeeds, segment_boxes_pair
from shapemask_ros.runtime.bundle import Bundle, resolve_model_path
from shapemask_ros.runtime.instances import Instances
from shapemask_ros.runtime.postprocess import mask_scores, paste_masks
from shapemask_ros.runtime.preprocess import (
    NON_FINITE,
    OUTSIDE_IMAGE,
    letterbox,
    validate_boxes,
    validate_image,
)
from shapemask_ros.utils import io

log = logging.getLogger(__name__)

UNKNOWN_CLASS = "unknown_class"  # counted in Instances.dropped: box kept, class treated as unknown (-1)


def flip_label(label: str) -> str:
    """Row label of a `Predictor.flip_average` run beside the plain one (`bench bundles`, `evaluate-bundle`)."""
    return f"{label} +flip"


class PredictorProtocol(Protocol):
    """What a frame processor needs of a predictor: `Predictor`, or a stand-in (tests, benchmarks, a timing
    wrapper). `mask_threshold` and `flip_average` are the predictor's own live settings, set by the processor."""

    mask_threshold: float
    flip_average: bool

    @property
    def backend(self) -> str: ...

    @property
    def class_names(self) -> Sequence[str]: ...

    def predict(
        self, image: np.ndarray, boxes: Any = None, classes: Any = None, score_threshold: float | None = None
    ) -> Instances: ...


class Predictor:
    """Runs a model bundle on images. Construct with `Predictor.load(path)`, or inject any `Backend`
    (tests, custom runtimes) with `Predictor(backend, bundle)`."""

    def __init__(
        self,
        backend: Backend,
        bundle: Bundle,
        skipped_backends: dict[str, str] | None = None,
        mask_threshold: float = 0.5,
        flip_average: bool = False,
    ) -> None:
        self.runtime_backend = backend
        self.bundle = bundle
        self.skipped_backends: dict[str, str] = dict(skipped_backends or {})  # name -> why `auto` passed it
        self.mask_threshold = float(mask_threshold)
        # also segment the mirrored image and average each pixel's two probabilities (test-time
        # augmentation): better masks for about twice the model time (docs/results/README.md)
        self.flip_average = bool(flip_average)

    @classmethod
    def load(
        cls,
        path: str,
        backend: str = "auto",
        options: BackendOptions | None = None,
        *,
        mask_threshold: float = 0.5,
        flip_average: bool = False,
    ) -> Predictor:
        """Read the bundle at `path` and create a backend: "auto" | "tensorrt" | "onnxruntime" | "tensorflow",
        with `options` (engine cache, providers, precision, threads, signatures: see `BackendOptions`).

        flip_average: see `Predictor.flip_average` (self-detection then also runs `segment_boxes`).
        """
        bundle = Bundle.read(path)
        impl, skipped = create_backend(bundle, backend, options)
        return cls(impl, bundle, skipped_backends=skipped, mask_threshold=mask_threshold, flip_average=flip_average)

    # -- model facts ---------------------------------------------------------------------------------------
    @property
    def backend(self) -> str:
        """Name of the backend in use, e.g. "onnxruntime:CPUExecutionProvider" (publish it: no silent CPU)."""
        return str(self.runtime_backend.name)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.bundle.class_names

    @property
    def image_size(self) -> int:
        return self.bundle.image_size

    @property
    def max_boxes(self) -> int:
        return self.bundle.max_boxes

    # -- inference -----------------------------------------------------------------------------------------
    def predict(
        self,
        image: np.ndarray,
        boxes: np.ndarray | list | None = None,
        classes: np.ndarray | list | None = None,
        score_threshold: float | None = None,
        full_masks: bool = False,
        mask_threshold: float | None = None,
    ) -> Instances:
        """Segment `image` (uint8 RGB H x W x 3; grey/RGBA accepted, see `validate_image`).

        boxes:   [N, 4] (x1, y1, x2, y2) in this image's pixels -> one instance per valid box, in input
                 order, `source_index` pointing back into `boxes`; invalid boxes are dropped and counted
                 in `Instances.dropped`. An empty array gives no instances. None -> the model's own
                 detections (`detect_and_segment`), filtered by `score_threshold` (None = the bundle's).
        classes: [N] contiguous class indices for `boxes`, -1 = unknown (None = all unknown). Ignored by
                 class-agnostic masks except as reported `class_ids`.
        full_masks: masks as full H x W arrays with regions (0, 0, W, H) instead of outer-box crops.
        mask_threshold: foreground probability (None = `self.mask_threshold`).
        """
        img = validate_image(image)
        height, width = img.shape[:2]
        thr = self.mask_threshold if mask_threshold is None else float(mask_threshold)
        net_input, scale = letterbox(img, self.bundle.image_size)
        net_input = net_input[None]
        mirror = img if self.flip_average else None
        if boxes is None:
            inst = self._detect(net_input, scale, (height, width), score_threshold, thr, mirror)
        else:
            inst = self._segment(net_input, scale, (height, width), boxes, classes, thr, mirror)
        if full_masks and len(inst):
            inst.masks = list(inst.full_masks())
            inst.regions = np.tile(np.array([[0, 0, width, height]], np.int32), (len(inst), 1))
        return inst

    def _model_classes(self, classes: np.ndarray, dropped: collections.Counter[str]) -> tuple[np.ndarray, np.ndarray]:
        """(class ids fed to the model, class ids reported). Unknown ids feed 0 (the spec's convention)."""
        if self.bundle.mask_class_agnostic:
            return np.zeros_like(classes, dtype=np.int32), classes.astype(np.int32)
        valid = (classes >= 0) & (classes < self.bundle.num_classes)
        bad = ~valid & (classes != -1)
        if bad.any():
            dropped[UNKNOWN_CLASS] += int(bad.sum())
            log.warning(
                "%d box class ids outside [0, %d) treated as unknown: %s",
                int(bad.sum()),
                self.bundle.num_classes,
                np.unique(classes[bad])[:10].tolist(),
            )
        feed = np.where(valid, classes, 0).astype(np.int32)
        reported = np.where(valid, classes, -1).astype(np.int32)
        return feed, reported

    def _segment(
        self,
        net_input: np.ndarray,
        scale: float,
        image_size: tuple[int, int],
        boxes: np.ndarray | list,
        classes: np.ndarray | list | None,
        thr: float,
        mirror: np.ndarray | None = None,
    ) -> Instances:
        kept, cls, source, dropped = validate_boxes(boxes, classes, image_size)
        if len(kept) == 0:
            empty = Instances.empty(image_size, backend=self.backend)
            empty.dropped = dict(dropped)
            return empty
        feed_cls, reported_cls = self._model_classes(cls, dropped)
        second = None
        if mirror is None:
            all_masks, outer_px = self._segment_maps(net_input, scale, kept, feed_cls)
        else:
            (all_masks, outer_px), second = self._segment_maps_and_mirrored(net_input, mirror, scale, kept, feed_cls)
        return self._instances(
            kept,
            np.ones(len(kept), np.float32),
            reported_cls,
            all_masks,
            outer_px,
            source,
            image_size,
            thr,
            dropped,
            second,
        )

    def _segment_maps(
        self, net_input: np.ndarray, scale: float, boxes_px: np.ndarray, feed_cls: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """segment_boxes over boxes [N, 4] in original pixels -> (maps [N, M, M], outer boxes [N, 4] in
        original pixels), in calls of at most max_boxes boxes (never dropping any)."""
        chunks = self._chunks(net_input, scale, boxes_px, feed_cls)
        return self._join([self.runtime_backend.segment_boxes(*feeds) for feeds in chunks], chunks, scale)

    def _chunks(
        self, net_input: np.ndarray, scale: float, boxes_px: np.ndarray, feed_cls: np.ndarray
    ) -> list[SegmentFeeds]:
        """segment_boxes' inputs for boxes in original pixels, at most max_boxes boxes a call."""
        net_boxes = (np.asarray(boxes_px, np.float64) * scale).astype(np.float32)
        step = self.bundle.max_boxes
        return [
            (net_input, net_boxes[None, a : a + step], feed_cls[None, a : a + step])
            for a in range(0, len(net_boxes), step)
        ]

    def _join(
        self, outs: list[dict[str, np.ndarray]], chunks: list[SegmentFeeds], scale: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """The chunks' outputs checked and concatenated: (maps [N, M, M], outer boxes [N, 4] in original pixels)."""
        checked = [self._check_chunk(out, feeds[1].shape[1]) for out, feeds in zip(outs, chunks, strict=True)]
        masks = np.concatenate([m for m, _ in checked], axis=0)
        return masks, np.concatenate([o for _, o in checked], axis=0).astype(np.float64) / scale

    def _mirror_input(self, image: np.ndarray) -> np.ndarray:
        """The left-right mirrored image, letterboxed like any other (content top-left, so the model sees what
        it was trained on), as a [1, S, S, 3] model input."""
        net_input, _ = letterbox(np.ascontiguousarray(image[:, ::-1]), self.bundle.image_size)
        return net_input[None]

    @staticmethod
    def _unmirror(maps: tuple[np.ndarray, np.ndarray], width: int) -> tuple[np.ndarray, np.ndarray]:
        """The mirrored pass's (maps, outer boxes) mapped back to the original image's frame."""
        masks, outer = maps
        return np.ascontiguousarray(masks[:, :, ::-1]), flip_boxes_lr(outer, width)

    def _mirrored_maps(
        self, image: np.ndarray, scale: float, boxes_px: np.ndarray, feed_cls: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The same boxes segmented in the left-right mirrored image, mapped back to this image's frame:
        (maps [N, M, M], outer boxes [N, 4] in original pixels)."""
        width = image.shape[1]
        maps = self._segment_maps(self._mirror_input(image), scale, flip_boxes_lr(boxes_px, width), feed_cls)
        return self._unmirror(maps, width)

    def _segment_maps_and_mirrored(
        self, net_input: np.ndarray, image: np.ndarray, scale: float, boxes_px: np.ndarray, feed_cls: np.ndarray
    ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """`_segment_maps` and `_mirrored_maps` of the same boxes, each chunk's two calls run together when
        the backend can (`segment_boxes_pair`)."""
        width = image.shape[1]
        plain = self._chunks(net_input, scale, boxes_px, feed_cls)
        mirrored = self._chunks(self._mirror_input(image), scale, flip_boxes_lr(boxes_px, width), feed_cls)
        pairs = [segment_boxes_pair(self.runtime_backend, a, b) for a, b in zip(plain, mirrored, strict=True)]
        first = self._join([a for a, _ in pairs], plain, scale)
        return first, self._unmirror(self._join([b for _, b in pairs], mirrored, scale), width)

    def _check_chunk(self, out: dict[str, np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
        masks = np.asarray(out["masks"], np.float32)
        outer = np.asarray(out["outer_boxes"], np.float32)
        if masks.ndim != 4 or masks.shape[:2] != (1, n) or masks.shape[2] != masks.shape[3]:
            raise RuntimeError(f"{self.backend}: segment_boxes returned masks {masks.shape}, expected [1, {n}, M, M]")
        if outer.shape != (1, n, 4):
            raise RuntimeError(
                f"{self.backend}: segment_boxes returned outer_boxes {outer.shape}, expected [1, {n}, 4]"
            )
        return masks[0], outer[0]

    def _detect(
        self,
        net_input: np.ndarray,
        scale: float,
        image_size: tuple[int, int],
        score_threshold: float | None,
        thr: float,
        mirror: np.ndarray | None = None,
    ) -> Instances:
        out = self.runtime_backend.detect_and_segment(net_input)
        boxes = np.asarray(out["boxes"], np.float64).reshape(-1, 4)
        scores = np.asarray(out["scores"], np.float32).reshape(-1)
        classes = np.asarray(out["classes"]).reshape(-1).astype(np.int32)
        masks = np.asarray(out["masks"], np.float32)
        outer = np.asarray(out["outer_boxes"], np.float64).reshape(-1, 4)
        masks = masks.reshape((-1,) + masks.shape[-2:])
        total = len(boxes)
        if not (len(scores) == len(classes) == len(masks) == len(outer) == total):
            raise RuntimeError(
                f"{self.backend}: detect_and_segment outputs disagree on the detection count: boxes {total}, "
                f"scores {len(scores)}, classes {len(classes)}, masks {len(masks)}, outer_boxes {len(outer)}"
            )
        n = int(np.asarray(out["num_detections"]).reshape(-1)[0])
        n = max(0, min(n, total))  # padded outputs: only the first num_detections are real
        thr_score = self.bundle.score_threshold if score_threshold is None else float(score_threshold)

        dropped: collections.Counter[str] = collections.Counter()
        boxes_px = boxes[:n] / scale
        outer_px = outer[:n] / scale
        finite = np.all(np.isfinite(boxes_px), axis=1) & np.all(np.isfinite(outer_px), axis=1) & np.isfinite(scores[:n])
        if (~finite).any():
            dropped[NON_FINITE] += int((~finite).sum())
        h, w = image_size
        boxes_px[:, 0::2] = np.clip(boxes_px[:, 0::2], 0, w)
        boxes_px[:, 1::2] = np.clip(boxes_px[:, 1::2], 0, h)
        with np.errstate(invalid="ignore"):
            nonempty = (boxes_px[:, 2] > boxes_px[:, 0]) & (boxes_px[:, 3] > boxes_px[:, 1])
            above = scores[:n] >= thr_score
        # boxes only in the letterbox padding collapse to nothing once clipped to the real image
        outside = finite & above & ~nonempty
        if outside.any():
            dropped[OUTSIDE_IMAGE] += int(outside.sum())
        keep = np.nonzero(finite & above & nonempty)[0]
        second = None
        if mirror is not None and len(keep):
            feed, _ = self._model_classes(classes[keep], collections.Counter())  # the detector's own ids
            second = self._mirrored_maps(mirror, scale, boxes_px[keep], feed)
        return self._instances(
            boxes_px[keep],
            scores[keep],
            classes[keep],
            masks[keep],
            outer_px[keep],
            keep.astype(np.int32),
            image_size,
            thr,
            dropped,
            second,
        )

    def _instances(
        self,
        boxes: np.ndarray,
        scores: np.ndarray,
        class_ids: np.ndarray,
        masks: np.ndarray,
        outer_px: np.ndarray,
        source: np.ndarray,
        image_size: tuple[int, int],
        thr: float,
        dropped: collections.Counter[str],
        second: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> Instances:
        """second: the mirrored pass's (maps, outer boxes) for the same objects, averaged in pixels."""
        crops, regions = paste_masks(masks, outer_px, image_size, threshold=thr, second=second)
        scores_m = (
            mask_scores(masks, thr) if second is None else 0.5 * (mask_scores(masks, thr) + mask_scores(second[0], thr))
        )
        return Instances(
            boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
            scores=np.asarray(scores, np.float32),
            class_ids=np.asarray(class_ids, np.int32),
            masks=crops,
            regions=regions,
            mask_scores=scores_m.astype(np.float32),
            source_index=np.asarray(source, np.int32),
            image_size=(int(image_size[0]), int(image_size[1])),
            backend=self.backend,
            dropped=dict(dropped),
        )


class ModelNotFoundError(FileNotFoundError):
    """No model bundle at the configured path (a user error: the message says what to set)."""


def load_predictor(config: NodeConfig, *, intra_op_num_threads: int = 0, spin: bool = BackendOptions.spin) -> Predictor:
    """The predictor `config` asks for, the one loading path of the node, bag-eval and the demo: the bundle
    `model_path` ("" = the shipped default), `backend`, `engine_cache_dir`, `mask_threshold`, `flip_average`.

    intra_op_num_threads: ONNX Runtime threads (0 = its default: every core; a fleet of workers shares them).
    spin: ONNX Runtime's threads busy-wait between runs (`BackendOptions.spin`, off by default, as every frame
    pipeline runs: spinning burns CPU outside every run, at 10 Hz a third of two cores for the same latency,
    docs/ros.md).
    Raises ModelNotFoundError (no bundle there), FileNotFoundError (a file of the bundle missing), ValueError
    (a bad bundle), RuntimeError (no backend can run it).
    """
    path = resolve_model_path(config.model_path)
    if not io.is_remote(path) and not os.path.exists(path):
        hint = "set model_path / --model, or build models/real_lite0" if not config.model_path else "check the path"
        raise ModelNotFoundError(f"model bundle not found: {path} ({hint})")
    options = BackendOptions(
        engine_cache_dir=config.engine_cache_dir or None, intra_op_num_threads=intra_op_num_threads, spin=spin
    )
    return Predictor.load(
        path, config.backend, options, mask_threshold=config.mask_threshold, flip_average=config.flip_average
    )
