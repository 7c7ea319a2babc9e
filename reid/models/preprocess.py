"""The preprocessing contract: one function turns crops into network input everywhere.

Training's eval transform, the exporter's parity check, the evaluator and the service all call
:func:`preprocess`, and the parameters travel inside every exported ONNX file as ``reid.*``
metadata, so train/serve skew cannot happen by construction. Torch-free on purpose: the service
imports this module.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: metadata keys every exported ONNX file carries
META_KEYS = (
    "reid.input_height", "reid.input_width", "reid.color", "reid.scale", "reid.mean", "reid.std",
    "reid.embedding_dim", "reid.normalized", "reid.kind", "reid.arch", "reid.trained_on", "reid.version",
)


@dataclass(frozen=True)
class PreprocessSpec:
    """How a crop becomes a network input: plain resize to W×H (no letterbox), colour order,
    ``x * scale``, then ``(x - mean) / std`` per channel."""

    height: int = 256
    width: int = 128
    color: str = "RGB"
    scale: float = 1.0 / 255.0
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.color not in ("RGB", "BGR"):
            raise ValueError(f"color must be RGB or BGR, got {self.color!r}")
        if self.height <= 0 or self.width <= 0:
            raise ValueError("input height and width must be positive")

    def to_metadata(self) -> dict[str, str]:
        return {
            "reid.input_height": str(self.height),
            "reid.input_width": str(self.width),
            "reid.color": self.color,
            "reid.scale": repr(float(self.scale)),
            "reid.mean": json.dumps([float(v) for v in self.mean]),
            "reid.std": json.dumps([float(v) for v in self.std]),
        }

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> PreprocessSpec:
        missing = [k for k in ("reid.input_height", "reid.input_width") if k not in meta]
        if missing:
            raise KeyError(f"model metadata lacks {missing}; supply preprocessing in config")
        return cls(
            height=int(meta["reid.input_height"]),
            width=int(meta["reid.input_width"]),
            color=meta.get("reid.color", "RGB"),
            scale=float(meta.get("reid.scale", 1 / 255)),
            mean=tuple(json.loads(meta.get("reid.mean", json.dumps(IMAGENET_MEAN)))),
            std=tuple(json.loads(meta.get("reid.std", json.dumps(IMAGENET_STD)))),
        )


@dataclass
class ModelCard:
    """The non-preprocessing half of the metadata contract."""

    embedding_dim: int
    kind: str = "image"  # image | video
    arch: str = "unknown"
    trained_on: str = "unknown"
    version: str = "0"
    extra: dict[str, str] = field(default_factory=dict)

    def to_metadata(self) -> dict[str, str]:
        meta = {
            "reid.embedding_dim": str(self.embedding_dim),
            "reid.normalized": "true",
            "reid.kind": self.kind,
            "reid.arch": self.arch,
            "reid.trained_on": self.trained_on,
            "reid.version": self.version,
        }
        meta.update(self.extra)
        return meta


def resize_crop(image_bgr: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Plain resize of a whole BGR uint8 crop to the model's W×H, in the model's colour order."""
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 image, got shape {image_bgr.shape}")
    resized = cv2.resize(image_bgr, (spec.width, spec.height), interpolation=cv2.INTER_LINEAR)
    if spec.color == "RGB":
        resized = resized[:, :, ::-1]
    return resized


def normalize(resized: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """uint8 H×W×3 (model colour order) → float32 3×H×W."""
    x = resized.astype(np.float32) * np.float32(spec.scale)
    x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def preprocess(images_bgr: list[np.ndarray] | np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """BGR uint8 crops of any size → float32 batch [B, 3, H, W] ready for the network."""
    if isinstance(images_bgr, np.ndarray) and images_bgr.ndim == 3:
        images_bgr = [images_bgr]
    batch = np.empty((len(images_bgr), 3, spec.height, spec.width), np.float32)
    for i, img in enumerate(images_bgr):
        batch[i] = normalize(resize_crop(img, spec), spec)
    return batch


def read_image(path: str) -> np.ndarray:
    """Read an image file as BGR uint8, with an error that names the file."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"cannot read image file: {path}")
    return img


def spec_dict(spec: PreprocessSpec) -> dict:
    return asdict(spec)


def onnx_metadata(model) -> dict[str, str]:
    """The ``metadata_props`` of a loaded ``onnx.ModelProto`` as a dict."""
    return {p.key: p.value for p in model.metadata_props}


def read_onnx_metadata(path: str) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file as a dict (torch-free)."""
    import onnx

    return onnx_metadata(onnx.load(str(path), load_external_data=False))


def write_onnx_metadata(path: str | Path, meta: dict[str, str]) -> None:
    """Replace the ``metadata_props`` of an ONNX file (torch-free)."""
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for k, v in meta.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = k, v
    onnx.save(model, str(path))
