"""Where an INT8 model's time goes, against the FP32 model it came from (ONNX Runtime's own per-node
profiler): why `reid quantize` does not make OSNet-x0.25 faster on this CPU.

    python bench/int8_profile.py [--model reid/models/default] [--out bench/int8_profile.md]

It quantises the model with `reid quantize`'s code (calibration on CUHK03 *train* crops), then runs
both files on one batch of 32 crops, 2 threads, 5 times each, and sums the kernel time per operator
type.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from _common import SHARED, hardware, write_report  # noqa: E402

RUNS = 5
CONVS = ("Conv", "FusedConv", "QLinearConv", "ConvInteger", "NhwcFusedConv")


def kernel_times(path: Path, batch: np.ndarray, threads: int) -> tuple[float, collections.Counter]:
    """(ms per batch, µs per operator type summed over the runs) from ORT's profile, of the graph a
    query runs: cut down to the embedding (the service's embed session)."""
    import onnxruntime as ort

    from reid.service.embedder import first_output_graph

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.enable_profiling = True
    so.profile_file_prefix = str(Path(tempfile.gettempdir()) / "reid_int8_profile")
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(first_output_graph(path) or str(path), so, providers=["CPUExecutionProvider"])
    sess.run(None, {"images": batch})  # warm-up, not profiled separately: skipped below
    for _ in range(RUNS):
        sess.run(None, {"images": batch})
    events = json.loads(Path(sess.end_profiling()).read_text())
    per_op: collections.Counter = collections.Counter()
    runs = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"]
    warm_up_end = runs[0]["ts"] + runs[0]["dur"] if runs else 0
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= warm_up_end:
            per_op[e["args"]["op_name"]] += e["dur"]
    return sum(per_op.values()) / RUNS / 1000, per_op


def cpu_has_vnni() -> bool:
    """x86 int8 dot-product instructions (AVX512-VNNI or AVX-VNNI), which ORT's int8 kernels use."""
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return False
    return any("vnni" in f for f in flags)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(REPO / "reid" / "models" / "default"), help="FP32 model directory")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "bench" / "int8_profile.md"))
    args = ap.parse_args()
    from reid.models.preprocess import PreprocessSpec, preprocess, read_image, read_onnx_metadata
    from reid.models.quantize import image_files, quantize_model

    model = Path(args.model)
    crops = image_files(SHARED / "data" / "cuhk03" / "train")
    spec = PreprocessSpec.from_metadata(read_onnx_metadata(str(model / "image.onnx")))
    val = sorted((SHARED / "data" / "cuhk03" / "val").glob("*.jpg"))[:32]
    batch = preprocess([read_image(str(p)) for p in val], spec)
    with tempfile.TemporaryDirectory() as tmp:
        report = quantize_model(model, Path(tmp) / "chosen", crops)
        # every backbone stage INT8, whatever the agreement: the question here is speed
        quantize_model(model, Path(tmp) / "all", crops, target_cosine=-1.0)
        files = {"FP32": model / "image.onnx",
                 f"INT8 as `reid quantize` chose (FP32 stages: {', '.join(report.fp32_stages) or 'none'}; "
                 f"cosine {report.mean_cosine})": Path(tmp) / "chosen" / "image.onnx",
                 "INT8, every backbone stage": Path(tmp) / "all" / "image.onnx"}
        profiles = {name: kernel_times(path, batch, args.threads) for name, path in files.items()}

    def conv_ms(ops: collections.Counter) -> float:
        return sum(t for op, t in ops.items() if op in CONVS) / RUNS / 1000

    def top(ops: collections.Counter) -> str:
        total = sum(ops.values())
        return " · ".join(f"{op} {t / total:.0%}" for op, t in ops.most_common(6))

    rows = [f"| {name} | {ms:.0f} | {conv_ms(ops):.0f} | {ms - conv_ms(ops):.0f} | {top(ops)} |"
            for name, (ms, ops) in profiles.items()]
    (fp_ms, fp_ops), (all_ms, all_ops) = profiles["FP32"], profiles["INT8, every backbone stage"]
    conv_ratio = conv_ms(all_ops) / conv_ms(fp_ops)
    rest_ratio = (all_ms - conv_ms(all_ops)) / (fp_ms - conv_ms(fp_ops))
    lines = [
        "# INT8 vs FP32: where the time goes (ONNX Runtime profiler)",
        "",
        f"Hardware: {hardware()}; int8 dot-product instructions (VNNI): {'yes' if cpu_has_vnni() else 'no'}. "
        f"Model: `{model.relative_to(REPO) if model.is_relative_to(REPO) else model}`, batch of 32 CUHK03 val "
        f"crops, {args.threads} threads, kernel time summed per operator type over {RUNS} runs after a warm-up; "
        "INT8 files by `reid quantize`'s code (calibration on CUHK03 *train* crops). One run of "
        "`python bench/int8_profile.py`.",
        "",
        "| file | kernel ms / batch | convolutions | everything else | top operators |",
        "|---|---:|---:|---:|---|",
        *rows,
        "",
        f"**Result: with every stage INT8 the model takes {all_ms / fp_ms:.2f}× the FP32 kernel time: its "
        f"convolutions {conv_ratio:.2f}× the FP32 ones, everything else {rest_ratio:.2f}×.** "
        "OSNet-x0.25's convolutions are narrow (16–128 channels) and mostly depthwise or 1×1, where 8-bit "
        "arithmetic has little to save without VNNI; the quantised element-wise ops around them (the channel "
        "gates' Mul, the residual Add, pooling) cost more than their FP32 versions. Issue 10's target (INT8 at "
        "≥ 1.5× the peer's speed, the same network) is out of reach on this CPU.",
    ]
    write_report(args.out, lines)


if __name__ == "__main__":
    main()
