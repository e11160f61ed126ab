"""Cost models: bytes moved and FLOPs done by a workload, from first principles.

The numbers come from the architecture alone (parameter shapes and the config),
never from a measurement, so a report can divide them by measured times.

Counting rules for one decoder forward over ``T`` new tokens, batch ``B``:

* **Weights read**: every parameter once, except embedding tables that are only
  gathered: those cost one row per token. A token embedding tied to the LM head
  is read in full (as the LM head) plus its gathered rows.
* **KV cache**: each layer stores K and V, ``2 * kv_heads * head_dim`` elements
  per token. A decode step writes its own token's K and V and attention then
  reads every cached position including that one (``L + 1`` for ``L`` cached),
  capped at the sliding window where the model has one. Only useful bytes are
  counted: an implementation that scans a padded static buffer does more.
* **FLOPs**: ``2`` per multiply-add of every matrix parameter per token (the LM
  head only for tokens whose logits are computed: the last one in prefill, as
  ``generate()`` does), plus attention scores and weighted values,
  ``4 * heads * head_dim`` per (query, key) pair. Norms, activations, softmax
  and embedding gathers are ignored (well under 1% at these sizes).
* **Mixture of experts** (Mixtral-style: each MoE layer routes every token to
  ``k`` of its ``n`` experts): a token multiplies the matrices of ``k`` experts,
  so the FLOPs count ``k / n`` of the expert matrices (3-D ``[n, out, in]``
  tensors or ``n`` per-expert linears) and all of the dense ones, router
  included. A forward over ``T`` tokens reads the experts they are routed to:
  with routing spread evenly and independently, the expected number of distinct
  experts per layer is ``n * (1 - (1 - k / n) ** T)`` (``k`` for one token, all
  ``n`` for a long prompt), and that share of the expert weights is what the
  weight bytes count. A layout the counter does not recognise is refused
  (``UserError``), never counted as dense.

* **Quantized storage** (``Storage``): int8 weights and an int8/fp8 KV cache are
  counted as stored, one byte per value plus their float32 scales (one per
  output channel of a weight, one per token and KV head of the cache).

Decimal units are applied later; everything here is plain bytes and FLOPs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from workloads.errors import UserError

# Config fields that hold the number of routed experts per MoE layer (n) and how many a token uses (k).
EXPERT_COUNT_FIELDS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
EXPERTS_PER_TOKEN_FIELDS = ("num_experts_per_tok", "experts_per_token", "moe_topk", "moe_k")


@dataclass(frozen=True)
class ModelShape:
    """What the cost model needs to know about an architecture."""

    params: int  # all parameters, a tied table counted once (every expert included)
    matmul_params: int  # weights multiplied per token, LM head included (k of n experts for MoE)
    lm_head_params: int
    gathered_params: int  # embedding tables only gathered from (not tied to the LM head)
    gathered_per_token: int  # elements gathered per token (token + position rows)
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    sliding_window: int | None = None
    expert_params: int = 0  # routed experts' parameters, all MoE layers (part of params); 0 for a dense model
    experts: int = 0  # routed experts per MoE layer (n)
    experts_per_token: int = 0  # experts each token is routed to (k)

    @property
    def kv_elements_per_token(self) -> int:
        """K and V elements one token adds to the cache, all layers."""
        return 2 * self.layers * self.kv_heads * self.head_dim

    def experts_read(self, tokens: int) -> float:
        """Expected distinct experts per MoE layer that a forward over ``tokens`` tokens routes to:
        ``n * (1 - (1 - k / n) ** tokens)`` (``k`` for one token, approaching ``n``); 0 for a dense model."""
        if not self.experts:
            return 0.0
        return self.experts * (1 - (1 - self.experts_per_token / self.experts) ** tokens)

    def weights_read(self, tokens: int) -> int:
        """Parameter elements read by one forward over ``tokens`` tokens (all sequences): dense weights in
        full, gathered rows per token, and the experts the tokens are routed to (expected count)."""
        dense = self.params - self.expert_params - self.gathered_params + tokens * self.gathered_per_token
        if not self.experts:
            return dense
        return dense + round(self.expert_params * self.experts_read(tokens) / self.experts)

    def attended(self, positions: int) -> int:
        """Key positions one query at ``positions`` visible positions attends to."""
        return min(positions, self.sliding_window) if self.sliding_window else positions


def _config_int(config, fields: tuple[str, ...]) -> tuple[str, object] | None:
    """The first of ``fields`` the config sets (not None), as (field, value)."""
    for name in fields:
        value = getattr(config, name, None)
        if value is not None:
            return name, value
    return None


def _refuse_moe(model: nn.Module, what: str) -> UserError:
    return UserError(
        f"{type(model).__name__} is a mixture-of-experts model whose expert layout llmbench cannot count: {what}. "
        "Its bytes and FLOPs would be wrong, so it is refused; use a dense model, or a Mixtral-style MoE "
        "(experts as 3-D [n, out, in] tensors or n per-expert linears in a module named 'experts', n and k in "
        "the config as num_local_experts / num_experts_per_tok)."
    )


def _expert_weights(model: nn.Module) -> tuple[dict[int, bool], int, int]:
    """The routed experts' parameters of an MoE model: ``({id(param): is_matrix}, n, k)``; ``({}, 0, 0)`` for
    a dense model. Raises ``UserError`` for an MoE layout it does not recognise."""
    config = model.config.get_text_config()
    count, per_token = _config_int(config, EXPERT_COUNT_FIELDS), _config_int(config, EXPERTS_PER_TOKEN_FIELDS)
    named_experts = [(name, m) for name, m in model.named_modules() if name.rsplit(".", 1)[-1] == "experts"]
    n = count[1] if count else None
    if not named_experts and (n is None or (isinstance(n, int) and n <= 1)):
        return {}, 0, 0  # dense: no expert module, and no (or a single) expert in the config
    if count is None:
        raise _refuse_moe(model, "it has modules named 'experts' but its config gives no expert count "
                                 f"(one of {', '.join(EXPERT_COUNT_FIELDS)})")
    if per_token is None:
        raise _refuse_moe(model, f"its config declares {count[0]}={n!r} experts but no experts per token "
                                 f"(one of {', '.join(EXPERTS_PER_TOKEN_FIELDS)})")
    banks = [(name, p) for name, p in model.named_parameters() if p.ndim >= 3]
    lists = [(name, m) for name, m in named_experts if isinstance(m, nn.ModuleList)]
    k = per_token[1]
    if not (isinstance(n, int) and isinstance(k, int) and 1 <= k <= n):
        raise _refuse_moe(model, f"config {count[0]}={n!r}, {per_token[0]}={k!r} is not k of n experts per token "
                                 "(integers, 1 <= k <= n, the same in every layer)")
    experts: dict[int, bool] = {}
    for name, module in lists:
        if len(module) != n:
            raise _refuse_moe(model, f"{name} holds {len(module)} experts, the config says {count[0]}={n}")
        for p in module.parameters():
            experts[id(p)] = p.ndim == 2  # one expert's linear weight, or its bias
    fused = {name.rsplit(".", 1)[0] for name, p in banks}  # modules holding [n, ...] expert tensors
    for name, p in model.named_parameters():
        owner = name.rsplit(".", 1)[0]
        if id(p) in experts or owner not in fused:
            continue
        if p.shape[0] != n or p.ndim > 3:
            raise _refuse_moe(model, f"{name} has shape {tuple(p.shape)}, not [{n}, ...] for {n} experts")
        experts[id(p)] = p.ndim == 3  # [n, out, in] matrices; [n, out] biases
    if not experts:
        raise _refuse_moe(model, f"its config declares {count[0]}={n} experts but no expert weights were found "
                                 "(no 3-D [n, out, in] tensors, no module list named 'experts')")
    return experts, n, k


def model_shape(model: nn.Module) -> ModelShape:
    """Read the shape off a built model (any device, ``meta`` included).

    Raises ``UserError`` for a mixture-of-experts layout the cost model cannot count."""
    config = model.config
    output = model.get_output_embeddings()
    lm_head = output.weight if output is not None else None
    params = {id(p): p for p in model.parameters()}
    total = sum(p.numel() for p in params.values())
    embeddings = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    gathered = sum(m.weight.numel() for m in embeddings if m.weight is not lm_head)
    per_token = sum(m.embedding_dim for m in embeddings)
    embedding_ids = {id(m.weight) for m in embeddings}
    experts, n_experts, k_experts = _expert_weights(model)
    expert_params = sum(params[i].numel() for i in experts)
    expert_matrices = sum(params[i].numel() for i, matrix in experts.items() if matrix)
    if n_experts and (expert_params % n_experts or expert_matrices % n_experts):
        raise _refuse_moe(model, f"its expert weights ({expert_params} elements) do not split into {n_experts} "
                                 "equal experts")
    matmul = sum(p.numel() for p in params.values()
                 if p.ndim == 2 and id(p) not in embedding_ids and id(p) not in experts)
    if n_experts:
        matmul += expert_matrices // n_experts * k_experts  # each token multiplies k experts' matrices
    lm_head_params = lm_head.numel() if lm_head is not None else 0
    if lm_head is not None and id(lm_head) in embedding_ids:
        matmul += lm_head_params  # tied: the embedding table doubles as the LM head matrix
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    window = getattr(config, "sliding_window", None) if getattr(config, "use_sliding_window", True) else None
    return ModelShape(
        params=total,
        matmul_params=matmul,
        lm_head_params=lm_head_params,
        gathered_params=gathered,
        gathered_per_token=per_token,
        layers=config.num_hidden_layers,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        sliding_window=window or None,
        expert_params=expert_params,
        experts=n_experts,
        experts_per_token=k_experts,
    )


@dataclass(frozen=True)
class Cost:
    """Bytes moved and FLOPs done by the work that one measured time covers: every workload's
    ``cost(point)`` returns one (see ``workloads.workload``).

    ``timed_by`` names the metric, in milliseconds, that the work took (``time_ms`` for one kernel
    call, ``decode_ms`` for a generation's decode steps, ``step_ms_p50`` for an optimizer step).
    ``bytes`` is None where the model counts FLOPs only (training). ``details`` is the record's
    ``cost`` block (default: bytes and FLOPs); ``phases`` are other timed parts of the same run
    (decode's ``prefill``, timed by ``ttft_ms``), whose rates the record keeps under their name.
    """

    bytes: int | None
    flops: int
    timed_by: str = "time_ms"
    details: dict | None = field(default=None, compare=False)
    phases: dict[str, Cost] = field(default_factory=dict, compare=False)

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.bytes + other.bytes, self.flops + other.flops, self.timed_by)

    def block(self) -> dict:
        """What the record stores under ``cost``."""
        return self.details if self.details is not None else {"bytes": self.bytes, "flops": self.flops}


@dataclass(frozen=True)
class Storage:
    """What a quantized decode stores in fewer bytes than the compute dtype (``workloads.quantize``),
    counted as stored: int8 linear weights (``weight_values`` elements of one byte plus
    ``weight_scales`` float32 scales, one per output channel), and a KV cache of ``kv_value_bytes``
    per K or V element plus one float32 scale per token, layer, KV head and K or V. The defaults are
    the unquantized model: everything in the compute dtype."""

    weight_values: int = 0
    weight_scales: int = 0
    kv_value_bytes: int | None = None

    def weight_bytes(self, shape: ModelShape, tokens: int, elem_bytes: int) -> int:
        """Bytes of the weights a forward over ``tokens`` tokens reads (``shape.weights_read``)."""
        return (shape.weights_read(tokens) - self.weight_values) * elem_bytes + self.weight_values \
            + SCALE_BYTES * self.weight_scales

    def kv_bytes_per_token(self, shape: ModelShape, elem_bytes: int) -> int:
        """Bytes one token's K and V take in the cache, all layers (scales included)."""
        if self.kv_value_bytes is None:
            return shape.kv_elements_per_token * elem_bytes
        vectors = shape.kv_elements_per_token // shape.head_dim
        return shape.kv_elements_per_token * self.kv_value_bytes + SCALE_BYTES * vectors


SCALE_BYTES = 4  # quantization scales are float32
FLOAT = Storage()


@dataclass(frozen=True)
class StepCost:
    weight_bytes: int
    kv_read_bytes: int
    kv_write_bytes: int
    flops: int

    @property
    def bytes(self) -> int:
        return self.weight_bytes + self.kv_read_bytes + self.kv_write_bytes


def decode_step(shape: ModelShape, batch: int, cached: int, elem_bytes: int, storage: Storage = FLOAT) -> StepCost:
    """One decode step: ``batch`` sequences, each with ``cached`` tokens already in the cache; weights
    and cache counted as ``storage`` stores them."""
    attended = shape.attended(cached + 1)
    kv_bytes = storage.kv_bytes_per_token(shape, elem_bytes)
    attn_flops = 4 * shape.layers * shape.heads * shape.head_dim * attended
    return StepCost(
        weight_bytes=storage.weight_bytes(shape, batch, elem_bytes),
        kv_read_bytes=batch * attended * kv_bytes,
        kv_write_bytes=batch * kv_bytes,
        flops=batch * (2 * shape.matmul_params + attn_flops),
    )


def prefill(shape: ModelShape, batch: int, prompt_len: int, elem_bytes: int, storage: Storage = FLOAT) -> StepCost:
    """The prompt forward: causal attention, LM head for the last token only."""
    pairs = sum(shape.attended(i) for i in range(1, prompt_len + 1))
    body = shape.matmul_params - shape.lm_head_params
    flops = batch * (
        2 * body * prompt_len + 2 * shape.lm_head_params + 4 * shape.layers * shape.heads * shape.head_dim * pairs
    )
    kv_bytes = storage.kv_bytes_per_token(shape, elem_bytes)
    return StepCost(
        weight_bytes=storage.weight_bytes(shape, batch * prompt_len, elem_bytes),
        kv_read_bytes=0,  # nothing is cached before the prompt; its K and V are fresh activations
        kv_write_bytes=batch * prompt_len * kv_bytes,
        flops=flops,
    )


def decode_run(shape: ModelShape, batch: int, prompt_len: int, new_tokens: int, elem_bytes: int,
               storage: Storage = FLOAT) -> StepCost:
    """All decode steps of one generation, summed: the first new token comes from
    prefill, then step ``k`` (1..new_tokens-1) runs with ``prompt_len + k - 1`` cached."""
    steps = [decode_step(shape, batch, prompt_len + k - 1, elem_bytes, storage) for k in range(1, new_tokens)]
    return StepCost(
        weight_bytes=sum(s.weight_bytes for s in steps),
        kv_read_bytes=sum(s.kv_read_bytes for s in steps),
        kv_write_bytes=sum(s.kv_write_bytes for s in steps),
        flops=sum(s.flops for s in steps),
    )


def finetune_step(shape: ModelShape, batch: int, seq_len: int) -> int:
    """Model FLOPs of one training step (forward + backward) over ``batch`` sequences of ``seq_len``.

    Forward: ``2`` per matrix weight per token, the LM head included (training
    computes logits for every position), plus causal attention, ``4 * heads *
    head_dim`` per visible (query, key) pair. Backward: ``2x`` the forward for the
    matrices (gradients for the activations and for the weights) and ``2.5x`` for
    attention (dQ, dK, dV and dP, with QK^T recomputed, as ``attention`` counts
    it). A step is thus ``3x`` the matmuls and ``3.5x`` attention's forward.
    Recomputation by gradient checkpointing is not counted: MFU counts model FLOPs.
    """
    pairs = sum(shape.attended(i) for i in range(1, seq_len + 1))
    matmuls = 2 * shape.matmul_params * seq_len
    attention_forward = 4 * shape.layers * shape.heads * shape.head_dim * pairs
    return batch * (3 * matmuls + 7 * attention_forward // 2)


def allreduce_bus_factor(world_size: int) -> float:
    """Bytes each process sends (and receives) per message byte in an all-reduce, ``2 (n - 1) / n``: a
    ring reduce-scatter then all-gather, each moving ``(n - 1) / n`` of the message. nccl-tests' bus
    bandwidth is the algorithm bandwidth (message bytes / time) times this, comparable to a link's
    speed whatever the number of processes."""
    return 2 * (world_size - 1) / world_size


def allreduce(message_bytes: int, world_size: int) -> Cost:
    """One all-reduce of ``message_bytes`` over ``world_size`` processes, as its bus bytes (so its rate is
    the bus bandwidth); the additions are not counted (never what limits an all-reduce)."""
    bus = round(message_bytes * allreduce_bus_factor(world_size))
    return Cost(bytes=bus, flops=0, details={"message_bytes": message_bytes, "bus_bytes": bus,
                                             "bus_factor": allreduce_bus_factor(world_size)})


@dataclass(frozen=True)
class Comm:
    """The collectives of one tensor-parallel forward: the bytes all-reduced (each process's payload) and
    the bytes all-gathered (the size of the gathered result), over ``tp`` processes."""

    allreduce_bytes: int
    allgather_bytes: int
    tp: int

    @property
    def bus_bytes(self) -> float:
        """What each process sends over its links (nccl-tests' bus bytes): ``2 (n-1)/n`` of an all-reduce's
        payload, ``(n-1)/n`` of an all-gather's result."""
        return (self.allreduce_bytes * allreduce_bus_factor(self.tp)
                + self.allgather_bytes * (self.tp - 1) / self.tp)


def tp_comm(layers: int, hidden: int, vocab: int, tokens: int, rows: int, tp: int, elem_bytes: int,
            head_split: bool = True) -> Comm:
    """The collectives of one forward over ``tokens`` tokens (all sequences) whose logits are computed for
    ``rows`` positions, Megatron-style (``workloads.tensor_parallel``): per layer, the attention output and
    the MLP output (``tokens x hidden`` each) are all-reduced; the LM head's vocabulary slices of the
    ``rows x vocab`` logits are all-gathered (when the head is split). Nothing for one process."""
    if tp == 1:
        return Comm(0, 0, 1)
    return Comm(allreduce_bytes=2 * layers * tokens * hidden * elem_bytes,
                allgather_bytes=rows * vocab * elem_bytes if head_split else 0, tp=tp)


def copy(elements: int, elem_bytes: int) -> Cost:
    """``b = a``: every element read once and written once."""
    return Cost(bytes=2 * elements * elem_bytes, flops=0)


def triad(elements: int, elem_bytes: int) -> Cost:
    """STREAM triad ``a = b + s * c``: two reads, one write, two FLOPs per element."""
    return Cost(bytes=3 * elements * elem_bytes, flops=2 * elements)


def matmul(m: int, n: int, k: int, elem_bytes: int) -> Cost:
    """``C[m,n] = A[m,k] @ B[k,n]``: inputs read and output written once (the ideal)."""
    return Cost(bytes=(m * k + k * n + m * n) * elem_bytes, flops=2 * m * n * k)


def attention(batch: int, heads: int, kv_heads: int, q_len: int, kv_len: int, head_dim: int, elem_bytes: int,
              causal: bool, backward: bool = False) -> Cost:
    """Fused attention over ``q_len`` queries and ``kv_len`` keys per head.

    FLOPs: ``4 * head_dim`` per visible (query, key) pair forward (QK^T and PV);
    the backward recomputes QK^T and adds dV, dP and dQ, dK: 2.5x the forward.
    With causal masking, query ``i`` (aligned to the end of the keys) sees
    ``kv_len - q_len + i + 1`` keys. Bytes: Q, K, V read and O written once
    (plus dO read and dQ, dK, dV written in the backward).
    """
    if causal:
        offset = kv_len - q_len
        pairs = sum(min(kv_len, max(0, offset + i + 1)) for i in range(q_len))
    else:
        pairs = q_len * kv_len
    forward_flops = 4 * batch * heads * head_dim * pairs
    q_o = 2 * batch * heads * q_len * head_dim
    k_v = 2 * batch * kv_heads * kv_len * head_dim
    if not backward:
        return Cost(bytes=(q_o + k_v) * elem_bytes, flops=forward_flops)
    # backward reads Q, K, V, O, dO and writes dQ, dK, dV: Q-sized x4, K/V-sized x2
    return Cost(bytes=(2 * q_o + 2 * k_v) * elem_bytes, flops=5 * forward_flops // 2)


def decode_attention(context_lens: list[int], heads: int, kv_heads: int, head_dim: int, elem_bytes: int,
                     q_len: int = 1) -> Cost:
    """Attention of ``q_len`` new queries per sequence over its cached keys.

    Each sequence's K and V are read once for all query heads that share them
    (GQA); Q is read and O written. FLOPs: ``4 * head_dim`` per (query head,
    query, key) pair.
    """
    kv = sum(2 * kv_heads * n * head_dim for n in context_lens)
    q_o = len(context_lens) * 2 * heads * q_len * head_dim
    flops = sum(4 * heads * q_len * n * head_dim for n in context_lens)
    return Cost(bytes=(q_o + kv) * elem_bytes, flops=flops)
