"""The names users choose from on the command line, importable without torch or transformers.

The CLI builds its whole parser from these (and a sweep checks a file's keys
against that parser), so ``llmbench --help`` and ``llmbench sweep plan`` start in
a fraction of a second instead of waiting for torch. The modules that implement
each choice import their tuple from here; the tests check these lists against
what transformers and PyTorch offer.
"""

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")  # workloads.precision, in the order reports list them

# the model a workload runs when --model is auto, per device type (training is ~3x a forward per token
# and keeps AdamW state: on a CPU the decode default is too slow to train)
DECODE_MODEL = {"cuda": "llama-3.2-1b", "cpu": "qwen2.5-0.5b"}
TRAIN_MODEL = {"cuda": "llama-3.2-1b", "cpu": "gpt2"}

ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "triton")  # transformers' two, and ours (workloads.attention)
CACHES = ("dynamic", "static", "offloaded", "offloaded_static", "quantized")  # transformers' KV caches we time
KV_FORMATS = ("auto", "fp32", "bf16", "fp16", "int8", "fp8")  # how the KV cache is stored (workloads.quantize)
WEIGHT_FORMATS = ("auto", "int8", "int8-torchao")  # how linear weights are stored and multiplied
ENGINES = ("hf", "hf-static", "lean")  # generate(), generate() with a static cache, workloads.lean
TRAINERS = ("lean", "hf")  # our loop, transformers' Trainer
PACKINGS = ("pack", "pad")  # how training text becomes fixed-length rows

# kernel benchmarks (workloads.kernelbench)
SDPA_BACKENDS = {"sdpa-flash": "FLASH_ATTENTION", "sdpa-efficient": "EFFICIENT_ATTENTION",
                 "sdpa-cudnn": "CUDNN_ATTENTION", "sdpa-math": "MATH"}  # name -> torch SDPBackend member
ATTENTION_IMPLS = ("triton", *SDPA_BACKENDS, "eager")
ATTENTION_MODES = ("fwd", "bwd", "fwd+bwd")
DECODE_ATTENTION_IMPLS = ("triton", "triton-paged", "sdpa", "eager")
CEILING_WORKLOADS = ("copy", "triad", "matmul", "allreduce")  # workloads.micro: their records are a device's ceilings
