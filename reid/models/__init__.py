"""Re-ID networks (IANet, TKP, VRSTC, CAN), backbones, the preprocessing contract and ONNX export.

Importing this package does not import torch; only ``reid.models.preprocess`` (and the ONNX
metadata helpers) are used by the service."""

from pathlib import Path

#: the shipped default model, installed with the package (image.onnx + MODEL_CARD.md)
SHIPPED_MODEL = Path(__file__).resolve().parent / "default"
