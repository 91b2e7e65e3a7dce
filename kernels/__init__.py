"""Custom GPU kernels (Triton / CuPy), each beside the plain-torch reference it is tested against."""
