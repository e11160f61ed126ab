"""What runs and what it costs: the workloads (decode, finetune, kernel cases, ceiling microbenchmarks)
behind one contract (``workload.py``), model presets, precisions, data and cost models.

Depends on torch, transformers and ``kernels``; never on ``harness``.
"""
