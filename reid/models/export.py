"""Export a checkpoint to self-describing ONNX files and check parity with PyTorch.

``image.onnx`` takes [B, 3, H, W]; for TKP, ``video.onnx`` takes [B, T, 3, H, W]. Both output
L2-normalised float32 embeddings and carry the preprocessing contract as ``reid.*`` metadata.
``image.onnx`` also outputs ``regions`` [B, R, D] (``reid.regions`` = R horizontal stripes whose
mean is the embedding before normalisation) for VRSTC's occlusion handling (reid/models/vrstc.py),
and ``maps`` [B, C, h, w] (``reid.map_grid`` = "hxw", the backbone map pooled to CAN's grid) for
the cross-attention re-ranker (reid/models/can.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from reid.models.networks import ModelConfig, NormalizedEmbedder, image_branch, load_checkpoint, video_branch
from reid.models.preprocess import ModelCard, PreprocessSpec, write_onnx_metadata

OPSET = 17
REGIONS = 4  # horizontal body regions for VRSTC (head/shoulders, torso, hips/thighs, legs)


def region_count(height_of_map: int, wanted: int = REGIONS) -> int:
    """The largest count ≤ ``wanted`` that splits the feature map into equal stripes."""
    return next(n for n in range(wanted, 0, -1) if height_of_map % n == 0)


def export_module(net: torch.nn.Module, out: Path, spec: PreprocessSpec, card: ModelCard) -> Path:
    """Trace ``net`` (eval mode) into ``out`` with a dynamic batch (and T for video)."""
    outputs = ["embeddings"]
    if card.kind == "video":
        embedder = NormalizedEmbedder(net).eval()
        dummy = torch.randn(2, 4, 3, spec.height, spec.width)
        axes = {"clips": {0: "batch", 1: "frames"}, "embeddings": {0: "batch"}}
        names = ["clips"]
    else:
        dummy = torch.randn(2, 3, spec.height, spec.width)
        with torch.no_grad():
            map_height = net.eval().backbone(dummy[:1]).shape[2]
            grid = net.embedding_parts(dummy[:1], 1)[2].shape[2:]
        n_regions = region_count(map_height)
        embedder = NormalizedEmbedder(net, n_regions).eval()
        axes = {"images": {0: "batch"}, "embeddings": {0: "batch"}, "regions": {0: "batch"}, "maps": {0: "batch"}}
        names, outputs = ["images"], ["embeddings", "regions", "maps"]
        card.extra["reid.regions"] = str(n_regions)
        card.extra["reid.map_grid"] = f"{grid[0]}x{grid[1]}"
    out.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(embedder, (dummy,), str(out), input_names=names, output_names=outputs,
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    flush_tiny_weights(out)
    write_onnx_metadata(out, {**spec.to_metadata(), **card.to_metadata()})
    return out


#: weights smaller than this are zero for any purpose, but near-denormal values make ONNX Runtime's
#: convolutions slow: a trained MobileNetV2 with ~5,700 of them embedded 2× slower (338 vs 692 img/s,
#: the same graph) until they were zeroed
TINY_WEIGHT = 1e-30


def flush_tiny_weights(path: Path) -> int:
    """Set float32 initializers with 0 < |w| < TINY_WEIGHT to 0 in the ONNX file; returns how many."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    n = 0
    for t in model.graph.initializer:
        a = numpy_helper.to_array(t)
        if a.dtype != np.float32:
            continue
        tiny = (a != 0) & (np.abs(a) < TINY_WEIGHT)
        if tiny.any():
            n += int(tiny.sum())
            t.CopyFrom(numpy_helper.from_array(np.where(tiny, np.float32(0), a), t.name))
    if n:
        onnx.save(model, str(path))
    return n


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, trained_on: str = "unknown",
                      version: str = "0") -> list[Path]:
    model, cfg, ckpt = load_checkpoint(str(checkpoint))
    trained_on = ckpt.get("trained_on", trained_on)
    return export_model(model, cfg, out_dir, trained_on=trained_on, version=version)


def export_model(model: torch.nn.Module, cfg: ModelConfig, out_dir: str | Path, trained_on: str = "unknown",
                 version: str = "0") -> list[Path]:
    out_dir = Path(out_dir)
    spec = cfg.preprocess
    arch = f"{cfg.arch}-{cfg.backbone}"
    model.eval()
    img = image_branch(model)
    paths = [export_module(img, out_dir / "image.onnx", spec,
                           ModelCard(img.embedding_dim, "image", arch, trained_on, version))]
    vid = video_branch(model)
    if vid is not None:
        paths.append(export_module(vid, out_dir / "video.onnx", spec,
                                   ModelCard(vid.embedding_dim, "video", arch, trained_on, version)))
    (out_dir / "model_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    return paths


def export_pair(scorer: torch.nn.Module, out: Path, channels: int, grid: tuple[int, int], trained_on: str,
                image_arch: str, version: str = "0") -> Path:
    """CAN's pair scorer (reid/models/can.py) as ``pair.onnx``: inputs ``query`` [1, C, h, w] and
    ``candidates`` [K, C, h, w] (the image model's ``maps``), output ``scores`` [K]."""
    h, w = grid
    query, cands = torch.randn(1, channels, h, w), torch.randn(3, channels, h, w)
    out.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(scorer.eval(), (query, cands), str(out), input_names=["query", "candidates"],
                          output_names=["scores"], dynamic_axes={"candidates": {0: "k"}, "scores": {0: "k"}},
                          opset_version=OPSET, dynamo=False)
    write_onnx_metadata(out, {"reid.kind": "pair", "reid.arch": f"can-{image_arch}", "reid.trained_on": trained_on,
                              "reid.version": version, "reid.map_grid": f"{h}x{w}", "reid.map_channels": str(channels)})
    return out


def parity(net: torch.nn.Module, onnx_path: Path, inputs: np.ndarray) -> float:
    """Max |PyTorch − ONNX Runtime| on ``inputs`` (already preprocessed)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = NormalizedEmbedder(net).eval()(torch.from_numpy(inputs)).numpy()
    got = sess.run(None, {sess.get_inputs()[0].name: inputs})[0]
    return float(np.abs(ref - got).max())
