"""How the networks run: weights resolved and checked (``weights``), backends (torch, ONNX Runtime on CPUs,
TensorRT on CUDA: ``backends``, ``tensorrt``, ``onnx_export``), precision per device (``precision``) and the
process's allocator (``runtime``)."""
