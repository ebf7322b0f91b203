"""ONNX Runtime sessions for the published ONNX backbones (WD14, anime aesthetic, CCIP)."""

from __future__ import annotations

from pathlib import Path


def onnx_session(path: Path, device: str = "cpu"):
    """An inference session on ``device`` (CUDA when asked for and available), quiet logging."""
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph types
        raise ValueError(f"{path}: not a loadable ONNX model ({type(err).__name__}: {err})") from err


def fixed_batch(session) -> int | None:
    """The model's batch size when the export fixed it (feed such models that many images at a time)."""
    batch = session.get_inputs()[0].shape[0]
    return batch if isinstance(batch, int) else None
