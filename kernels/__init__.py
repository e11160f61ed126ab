"""Triton kernels with PyTorch references beside them.

Imports only torch and triton: never transformers, workloads or harness.
What several kernels share (constants, launch-time choices, jit helpers) is in
``kernels.common`` under public names; no private name is imported across files.
Note: Hugging Face's kernel-hub package is also imported as ``kernels``; the two
cannot be installed in one environment (see the README's troubleshooting).
"""
