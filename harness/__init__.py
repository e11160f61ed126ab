"""llmbench's harness: CLI, runner, timing, records and environment capture.

Depends on ``workloads`` (and through it on ``kernels``); nothing depends on it.
"""
