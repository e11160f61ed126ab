"""Training data without downloads: a learnable synthetic token stream, or a local dataset folder.

* ``synthetic`` (the default): sequences drawn from a fixed random Markov chain
  over a few hundred of the model's token ids, each with four possible
  successors. A model can learn it (the loss falls from ``ln(vocab)`` towards
  ``ln 4`` within a few steps on a tiny model), yet it costs no tokenizer and no
  I/O, and every sequence is fresh.
* a local folder: a ``datasets.save_to_disk`` folder (``Dataset`` or
  ``DatasetDict``) or a folder of parquet / json / csv / txt files (an offline copy
  of wikitext-2-raw-v1, say), read with ``datasets`` from disk. ``--split`` takes
  the usual slicing (``train[:10%]``, ``train[100:200]``). ``datasets`` is imported
  only here, when a folder is read: GPU machines may not have it.

Text is tokenized with the tokenizer of a local model directory, or, for a preset
(random weights, no tokenizer files), with a byte-level tokenizer built here with
the ``tokenizers`` library: one token per UTF-8 byte (id = byte value) plus
``<eos>`` and ``<pad>``, so it fits every preset's vocabulary. Documents are
either packed (concatenated with an end-of-sequence token between them and cut
into ``seq_len`` blocks: no padding, every position trains) or padded (one
document per row, truncated, padding masked out of attention and loss).

The result is a ``TokenBlocks``: fixed-length rows of ``input_ids`` (plus
``attention_mask`` and ``labels``), a plain map-style dataset that both trainers
read. Blocks are repeated when the data holds fewer than a run needs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from workloads.errors import UserError

FILE_BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv", ".txt": "text"}
SPLIT_SPEC = re.compile(r"^(?P<name>[\w.-]+)(\[(?P<slice>[^\]]*)\])?$")
MARKOV_STATES = 256  # token ids the synthetic chain visits (fewer when the vocabulary is smaller)
MARKOV_SUCCESSORS = 4  # equally likely next tokens per state: the best reachable loss is ln 4


@dataclass(frozen=True)
class TokenBlocks:
    """Rows of ``seq_len`` token ids for causal-LM training; labels are the inputs (the
    model shifts them), with padding set to -100."""

    input_ids: torch.Tensor  # (rows, seq_len) int64
    attention_mask: torch.Tensor  # (rows, seq_len) int64, 0 on padding
    unique_rows: int  # rows before repetition to the requested count
    source: str  # "synthetic" or the folder read

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        ids, mask = self.input_ids[index], self.attention_mask[index]
        return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}

    def batch(self, indices) -> dict[str, torch.Tensor]:
        ids, mask = self.input_ids[indices], self.attention_mask[indices]
        return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}

    @property
    def padding_fraction(self) -> float:
        return 1.0 - float(self.attention_mask.float().mean())


def synthetic(vocab_size: int, rows: int, seq_len: int, seed: int = 0) -> TokenBlocks:
    """``rows`` sequences from a fixed random Markov chain (the chain depends on ``seed`` only)."""
    chain = np.random.default_rng(seed)
    states = min(MARKOV_STATES, vocab_size)
    tokens = chain.choice(vocab_size, size=states, replace=False)
    successors = chain.integers(0, states, size=(states, MARKOV_SUCCESSORS))
    draws = np.random.default_rng([seed, 1])
    walk = np.empty((rows, seq_len), dtype=np.int64)
    walk[:, 0] = draws.integers(0, states, size=rows)
    picks = draws.integers(0, MARKOV_SUCCESSORS, size=(rows, seq_len))
    for t in range(1, seq_len):
        walk[:, t] = successors[walk[:, t - 1], picks[:, t]]
    ids = torch.from_numpy(tokens[walk])
    return TokenBlocks(ids, torch.ones_like(ids), rows, "synthetic")


def byte_tokenizer():
    """A byte-level tokenizer that needs no files: id = UTF-8 byte value, then ``<eos>`` (256), ``<pad>`` (257)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {char: byte for byte, char in bytes_to_unicode().items()}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")


def local_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load a tokenizer from {model_dir}: {str(exc).splitlines()[0]}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _split(spec: str) -> tuple[str, str]:
    match = SPLIT_SPEC.match(spec.strip())
    if not match:
        raise UserError(f"bad --split {spec!r}; expected a split name with optional slicing, e.g. train[:10%]")
    return match["name"], spec.strip()


def _apply_slice(dataset, spec: str, name: str):
    """Split slicing (``train[:10%]``) for data already in memory, with ``datasets``' own parser."""
    import datasets

    if "[" not in spec:
        return dataset
    try:
        instructions = datasets.ReadInstruction.from_spec(spec).to_absolute({name: len(dataset)})
    except (ValueError, AssertionError) as exc:
        raise UserError(f"bad --split {spec!r}: {exc}") from None
    rows = [i for ins in instructions for i in range(ins.from_, ins.to)]
    return dataset.select(rows)


def read_texts(path: Path, split: str, text_column: str | None) -> list[str]:
    """The non-empty texts of one split of a local dataset folder."""
    if not path.exists():
        raise UserError(f"--data {path}: no such file or folder (use --data synthetic for generated tokens)")
    try:
        import datasets
    except ImportError:
        raise UserError("--data PATH needs the `datasets` package (pip install datasets); "
                        "--data synthetic works without it") from None
    datasets.disable_progress_bars()
    name, spec = _split(split)
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if name not in loaded:
                raise UserError(f"--split {split}: {path} has splits {', '.join(loaded)}, not {name!r}")
            loaded = loaded[name]
        dataset = _apply_slice(loaded, spec, name)
    else:
        files = [p for p in sorted(path.rglob("*") if path.is_dir() else [path]) if p.suffix in FILE_BUILDERS]
        builders = {FILE_BUILDERS[p.suffix] for p in files}
        if len(builders) != 1:
            found = "no" if not builders else "mixed (" + ", ".join(sorted(builders)) + ")"
            raise UserError(f"--data {path}: {found} data files; expected a save_to_disk folder or "
                            f"files of one kind ({', '.join(sorted(FILE_BUILDERS))})")
        try:
            dataset = datasets.load_dataset(builders.pop(), data_dir=str(path) if path.is_dir() else None,
                                            data_files=None if path.is_dir() else str(path), split=spec)
        except ValueError as exc:
            raise UserError(f"--split {split}: {str(exc).splitlines()[0]}") from None
    return [t for t in dataset[_text_column(dataset, text_column, path)] if t and t.strip()]


def _text_column(dataset, wanted: str | None, path: Path) -> str:
    strings = [name for name, feature in dataset.features.items()
               if getattr(feature, "dtype", None) in ("string", "large_string")]
    if wanted:
        if wanted not in strings:
            raise UserError(f"--text-column {wanted!r} is not a text column of {path} "
                            f"(text columns: {', '.join(strings) or 'none'})")
        return wanted
    if "text" in strings:
        return "text"
    if len(strings) == 1:
        return strings[0]
    columns = ", ".join(dataset.column_names)
    if not strings:
        raise UserError(f"{path} has no text column (columns: {columns}); fine-tuning needs text")
    raise UserError(f"{path} has several text columns ({', '.join(strings)}); choose one with --text-column")


def tokenize(texts: list[str], tokenizer, seq_len: int, packing: str, rows_needed: int, source: str) -> TokenBlocks:
    """Token blocks from texts, tokenizing only as many texts as ``rows_needed`` blocks take."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    blocks: list[list[int]] = []
    masks: list[list[int]] = []
    stream: list[int] = []
    chunk = 256
    for start in range(0, len(texts), chunk):
        for ids in tokenizer(texts[start:start + chunk], add_special_tokens=False)["input_ids"]:
            if packing == "pack":
                stream.extend(ids)
                stream.append(eos)
                while len(stream) >= seq_len:
                    blocks.append(stream[:seq_len])
                    del stream[:seq_len]
            else:
                ids = ids[:seq_len]
                blocks.append(ids + [pad] * (seq_len - len(ids)))
                masks.append([1] * len(ids) + [0] * (seq_len - len(ids)))
        if len(blocks) >= rows_needed:
            break
    if not blocks:
        raise UserError(f"{source} holds too little text for one block of {seq_len} tokens; "
                        "lower --seq-len or use --packing pad")
    ids = torch.tensor(blocks, dtype=torch.long)
    mask = torch.tensor(masks, dtype=torch.long) if masks else torch.ones_like(ids)
    unique = min(ids.shape[0], rows_needed)
    repeat = -(-rows_needed // ids.shape[0])
    ids, mask = ids.repeat(repeat, 1)[:rows_needed], mask.repeat(repeat, 1)[:rows_needed]
    return TokenBlocks(ids, mask, unique, source)
