"""Re-ID networks (IANet, TKP), backbones, the preprocessing contract and ONNX export.

Importing this package does not import torch; only ``models.preprocess`` and
``models.onnx_meta`` are used by the service."""
