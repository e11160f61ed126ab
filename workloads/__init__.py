"""What runs: model presets, precisions, and the decode workload with its cost model.

Depends on torch and transformers (and later on ``kernels``); never on ``harness``.
"""
