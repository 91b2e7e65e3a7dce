"""ONNX export of the detector network (the raw outputs), for onnxruntime and for building TensorRT engines."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from .models.retinaface import RetinaFace

OUTPUT_NAMES = ("loc", "conf", "landms")


def export_retinaface(model: RetinaFace, out: str | Path, opset: int = 17, height: int = 640, width: int = 640) -> Path:
    """Write the network with dynamic batch, height and width; input is BGR-minus-mean float32 NCHW."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = model.float().eval().to("cpu").to(memory_format=torch.contiguous_format)
    example = torch.zeros(1, 3, height, width)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model,
            (example,),
            str(out),
            input_names=["input"],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={
                "input": {0: "batch", 2: "height", 3: "width"},
                **{name: {0: "batch", 1: "priors"} for name in OUTPUT_NAMES},
            },
            opset_version=opset,
            dynamo=False,
        )
    return out
