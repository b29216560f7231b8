"""Shared helpers for the export/runtime tests: tiny random-weight checkpoints and their ONNX
exports, made once per test session (the cache is keyed by the session's temp root)."""
from __future__ import annotations

from pathlib import Path

# stride 4, a few thousand parameters: exports and runs in well under a second
TINY_SPEC = {"type": "edgenet", "widths": [8, 16], "enc_blocks": [1], "dec_blocks": [1], "mid_blocks": 1}
TINY_RNN_SPEC = dict(TINY_SPEC, type="edgenet_rnn")
TINY_FRAMES_SPEC = dict(TINY_SPEC, type="edgenet_frames", prev_frames=2)

_CACHE: dict = {}


def make_checkpoint(path, spec=TINY_SPEC, seed: int = 0, meta: dict | None = None) -> Path:
    """A checkpoint whose weights are all random (the zero-initialized tail too), so that the
    model is far from the identity and parity checks can fail."""
    import torch

    from edge_deblur.models import build_model
    from edge_deblur.models.checkpoint import save_checkpoint

    torch.manual_seed(seed)
    model = build_model(spec)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * (0.5 / max(1, p[0].numel()) ** 0.5))
    path = Path(path)
    save_checkpoint(path, model.state_dict(), model.spec, meta=meta or {"iterations": 123, "metrics": {"psnr": 30.5}})
    return path


def exported(tmp_path_factory, name: str = "tiny", spec=TINY_SPEC, fp16: bool = True) -> dict:
    """{'ckpt', 'onnx', 'fp16', 'dir', 'manifest'} of a tiny model exported once per session."""
    key = (str(tmp_path_factory.getbasetemp()), name)
    if key not in _CACHE:
        from edge_deblur.export.onnx_export import export_onnx

        root = tmp_path_factory.mktemp(f"export_{name}")
        ckpt = make_checkpoint(root / f"{name}.safetensors", spec)
        out = root / name
        manifest = export_onnx(ckpt, out, fp16=fp16)
        _CACHE[key] = {
            "ckpt": ckpt,
            "onnx": out / "model.onnx",
            "fp16": out / "model.fp16.onnx" if fp16 else None,
            "dir": out,
            "manifest": manifest,
        }
    return _CACHE[key]


def fixed_batch_onnx(path, batch: int = 1) -> Path:
    """A one-conv ONNX whose input and output have a fixed batch (as many exports elsewhere do):
    a 3x3 blur of each channel (not the identity), any H and W."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.zeros((3, 3, 3, 3), np.float32)
    for c in range(3):
        w[c, c] = 1.0 / 9.0
    io = [batch, 3, "height", "width"]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["output"], pads=[1, 1, 1, 1])], "fixed_batch",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, io)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, io)],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return Path(path)
