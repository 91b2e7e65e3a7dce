"""ONNX export of the networks (raw outputs), for ONNX Runtime on CPUs and for building TensorRT engines."""

from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path

import torch

OUTPUT_NAMES = ("loc", "conf", "landms")


def export_onnx(
    model: torch.nn.Module,
    example: torch.Tensor,
    input_name: str,
    output_names: tuple[str, ...],
    dynamic_axes: dict[str, dict[int, str]],
    out: str | Path | None = None,
    opset: int = 17,
) -> bytes:
    """The ONNX bytes of ``model`` (an fp32 CPU copy: the caller's network is left as it is), also written to
    ``out`` when given."""
    model = copy.deepcopy(model).float().eval().to("cpu").to(memory_format=torch.contiguous_format)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model,
            (example.float().cpu(),),
            buffer,
            input_names=[input_name],
            output_names=list(output_names),
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            dynamo=False,
        )
    data = buffer.getvalue()
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_bytes(data)
    return data


def retinaface_onnx(
    model: torch.nn.Module, out: str | Path | None = None, opset: int = 17, height: int = 640, width: int = 640
) -> bytes:
    """RetinaFace with dynamic batch, height and width; input is BGR-minus-mean float32 NCHW."""
    return export_onnx(
        model,
        torch.zeros(1, 3, height, width),
        "input",
        OUTPUT_NAMES,
        {"input": {0: "batch", 2: "height", 3: "width"}, **{name: {0: "batch", 1: "priors"} for name in OUTPUT_NAMES}},
        out,
        opset,
    )


def export_retinaface(
    model: torch.nn.Module, out: str | Path, opset: int = 17, height: int = 640, width: int = 640
) -> Path:
    """Write :func:`retinaface_onnx` to ``out``."""
    retinaface_onnx(model, out, opset, height, width)
    return Path(out)


def descriptor_onnx(
    model: torch.nn.Module, size: int, input_name: str, out: str | Path | None = None, opset: int = 17
) -> bytes:
    """An embedder with a dynamic batch: ``[N, 3, size, size]`` float input named ``input_name`` → ``descriptors``."""
    return export_onnx(
        model,
        torch.zeros(1, 3, size, size),
        input_name,
        ("descriptors",),
        {input_name: {0: "batch"}, "descriptors": {0: "batch"}},
        out,
        opset,
    )


def dlib_resnet_onnx(model: torch.nn.Module, out: str | Path | None = None, opset: int = 17) -> bytes:
    """The face ResNet; input is float RGB chips ``[N, 3, 150, 150]`` (0..255)."""
    return descriptor_onnx(model, 150, "chips", out, opset)


def hse_mobilenet_onnx(model: torch.nn.Module, out: str | Path | None = None, opset: int = 17) -> bytes:
    """The HSE face network; input is BGR-minus-VGG-means float crops ``[N, 3, 224, 224]``, output the raw (not
    normalised) 1024-d descriptors."""
    return descriptor_onnx(model, 224, "crops", out, opset)
