"""The one way an ONNX model is opened: onnxruntime on the CPU, with a fixed thread budget."""

from __future__ import annotations

import os

import onnxruntime as ort


def onnx_session(path: str | os.PathLike, threads: int = 1) -> ort.InferenceSession:
    """An inference session on ``CPUExecutionProvider`` running operators one at a time (sequential,
    one inter-op thread), each on ``threads`` intra-op threads (at least 1: never "all cores")."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
