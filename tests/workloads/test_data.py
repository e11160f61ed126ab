"""Training data: the synthetic chain, the byte-level tokenizer, packing and padding, and
local dataset folders (save_to_disk and parquet) read offline with split slicing."""

import pytest
import torch

from workloads import data
from workloads.errors import UserError

datasets = pytest.importorskip("datasets")

WIKI = [" = Valkyria Chronicles III = \n", "", " Senjō no Valkyria 3 is a tactical role @-@ playing game .\n",
        " It was released in January 2011 in Japan .\n"] * 10  # 40 rows, 30 with text


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("wikitext")
    splits = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"text": WIKI}),
        "validation": datasets.Dataset.from_dict({"text": WIKI[:8]}),
    })
    splits.save_to_disk(str(root / "saved"))
    for name, split in splits.items():
        split.to_parquet(str(root / "parquet" / f"{name}.parquet"))
    datasets.Dataset.from_dict({"label": [1, 2], "score": [0.5, 0.7]}).save_to_disk(str(root / "numbers"))
    datasets.Dataset.from_dict({"title": ["a"], "body": ["b"]}).save_to_disk(str(root / "two-texts"))
    return root


def test_synthetic_is_a_fixed_markov_chain():
    a, b = data.synthetic(512, 64, 40, seed=3), data.synthetic(512, 64, 40, seed=3)
    assert torch.equal(a.input_ids, b.input_ids) and a.input_ids.shape == (64, 40)
    assert not torch.equal(a.input_ids, data.synthetic(512, 64, 40, seed=4).input_ids)
    ids = a.input_ids
    assert int(ids.max()) < 512 and a.padding_fraction == 0.0
    assert len(set(ids.flatten().tolist())) <= data.MARKOV_STATES
    successors = {}
    for row in ids.tolist():
        for here, nxt in zip(row, row[1:]):
            successors.setdefault(here, set()).add(nxt)
    assert max(map(len, successors.values())) <= data.MARKOV_SUCCESSORS  # learnable: few next tokens each
    assert len({tuple(r) for r in ids.tolist()}) == 64  # every sequence is fresh
    small = data.synthetic(50, 4, 8)
    assert int(small.input_ids.max()) < 50


def test_byte_tokenizer_ids_are_bytes():
    tok = data.byte_tokenizer()
    text = "Senjō no Valkyria"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids == list(text.encode("utf-8"))
    assert tok.decode(ids) == text
    assert (tok.eos_token_id, tok.pad_token_id, len(tok)) == (256, 257, 258)


def test_packing_and_padding():
    tok = data.byte_tokenizer()
    texts = ["abcdef", "ghij"]
    packed = data.tokenize(texts, tok, seq_len=4, packing="pack", rows_needed=5, source="t")
    stream = list(b"abcdef") + [256] + list(b"ghij") + [256]
    assert packed.input_ids.tolist()[:3] == [stream[0:4], stream[4:8], stream[8:12]]
    assert packed.input_ids.tolist()[3] == stream[0:4] and packed.unique_rows == 3  # repeated to 5 rows
    assert packed.padding_fraction == 0.0
    padded = data.tokenize(texts, tok, seq_len=5, packing="pad", rows_needed=2, source="t")
    assert padded.input_ids.tolist() == [list(b"abcde"), list(b"ghij") + [257]]
    row = padded[1]
    assert row["attention_mask"].tolist() == [1, 1, 1, 1, 0]
    assert row["labels"].tolist() == list(b"ghij") + [-100]
    with pytest.raises(UserError, match="too little text"):
        data.tokenize(["ab"], tok, seq_len=64, packing="pack", rows_needed=1, source="t")


@pytest.mark.parametrize("kind", ["saved", "parquet"])
def test_local_folder_with_split_slicing(folders, kind):
    assert len(data.read_texts(folders / kind, "train", None)) == 30
    assert data.read_texts(folders / kind, "train[:10%]", None) == [WIKI[0], WIKI[2], WIKI[3]]
    assert len(data.read_texts(folders / kind, "train[4:8]", None)) == 3
    assert len(data.read_texts(folders / kind, "validation", None)) == 6


@pytest.mark.parametrize("folder, split, column, message", [
    ("missing", "train", None, "no such file or folder"),
    ("numbers", "train", None, "no text column (columns: label, score)"),
    ("two-texts", "train", None, "several text columns"),
    ("two-texts", "train", "title2", "is not a text column"),
    ("saved", "test", None, "has splits train, validation, not 'test'"),
    ("parquet", "test", None, "Unknown split"),
    ("saved", "train[:200%]", None, "bad --split"),
    ("saved", "train[[", None, "bad --split"),
])
def test_bad_folders_and_splits(folders, folder, split, column, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        data.read_texts(folders / folder, split, column)
