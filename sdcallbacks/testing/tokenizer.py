"""The real CLIP BPE tokenizer, built offline from the vocabulary that ships inside open_clip.

The CLIP vocabulary is deterministic: 256 byte-level symbols, the same with ``</w>``, one entry per
merge (the first 49152 - 256 - 2 merge lines after the header) and the two special tokens, 49,408 in all.
Written as ``vocab.json`` + ``merges.txt`` it gives the same ids as ``open_clip.get_tokenizer``, so tests
see SD's true 77-token behaviour without a hub download.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

CLIP_VOCAB_SIZE = 49408


@lru_cache(maxsize=1)
def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2/CLIP byte-to-printable-unicode table.
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def _bpe_file() -> Path:
    import open_clip.tokenizer as oc_tokenizer

    return Path(oc_tokenizer.default_bpe())


@lru_cache(maxsize=1)
def clip_merges() -> tuple[str, ...]:
    """CLIP's merge lines in rank order: the first 49152 - 256 - 2 after the header of open_clip's file."""
    with gzip.open(_bpe_file(), "rt", encoding="utf-8") as fh:
        return tuple(fh.read().split("\n")[1 : 49152 - 256 - 2 + 1])


def clip_whole_words() -> Iterator[tuple[int, str]]:
    """(merge rank, word) of each merge that completes an ASCII alphanumeric word, in rank order (an
    earlier merge is a more frequent word): the word lists of the T5 and BERT test vocabularies."""
    for rank, merge in enumerate(clip_merges()):
        token = "".join(merge.split())
        word = token[:-4]
        if token.endswith("</w>") and word.isascii() and word.isalnum():
            yield rank, word


def write_clip_tokenizer_files(folder: Path) -> Path:
    """Write ``vocab.json``, ``merges.txt`` and the tokenizer configs of CLIP into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    merges = clip_merges()
    symbols = list(_bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == CLIP_VOCAB_SIZE, len(vocab)
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    special = {
        "content": "<|endoftext|>",
        "lstrip": False,
        "normalized": True,
        "rstrip": False,
        "single_word": False,
    }
    (folder / "special_tokens_map.json").write_text(
        json.dumps(
            {
                "bos_token": {**special, "content": "<|startoftext|>"},
                "eos_token": special,
                "pad_token": special,
                "unk_token": special,
            }
        ),
        encoding="utf-8",
    )
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "CLIPTokenizer",
                "model_max_length": 77,
                "do_lower_case": True,
                "bos_token": "<|startoftext|>",
                "eos_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>",
            }
        ),
        encoding="utf-8",
    )
    return folder


def build_clip_tokenizer(folder: Path):
    """A ``transformers.CLIPTokenizer`` over the files written by :func:`write_clip_tokenizer_files`."""
    from transformers import CLIPTokenizer

    if not (folder / "vocab.json").is_file():
        write_clip_tokenizer_files(folder)
    # transformers v5 ignores vocab_file=/merges_file= keywords: pass them positionally.
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)


T5_WORDS = 8000  # whole words of CLIP's vocabulary that become T5 pieces


def t5_vocabulary(words: int = T5_WORDS) -> list[tuple[str, float]]:
    """A unigram vocabulary in T5's layout (``<pad>``, ``</s>``, ``<unk>``, then pieces with log-probability
    scores): CLIP's first ``words`` whole-word merges as ``▁word`` pieces, scored by merge rank (an earlier
    merge is a more frequent word), and every printable ASCII character alone and after ``▁`` with a low
    score, so any English text segments into words where it can and characters where it must."""
    import math
    import string

    pieces: dict[str, float] = {}
    for rank, word in clip_whole_words():
        pieces.setdefault("▁" + word, -math.log(rank + 2))
        if len(pieces) == words:
            break
    for char in string.ascii_letters + string.digits + string.punctuation:
        pieces.setdefault("▁" + char, -20.0)
        pieces.setdefault(char, -21.0)
    pieces.setdefault("▁", -22.0)
    return [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), *pieces.items()]


def build_t5_tokenizer(folder: Path, model_max_length: int = 512):
    """A ``transformers.T5TokenizerFast`` (a unigram model, as the SentencePiece model of T5 v1.1 is) over
    :func:`t5_vocabulary`, saved in ``folder`` with ``save_pretrained`` and loaded back from it, as Flux's
    and SD3's pipelines load ``tokenizer_2``/``tokenizer_3``."""
    from transformers import T5TokenizerFast

    if not (folder / "tokenizer_config.json").is_file():
        T5TokenizerFast(vocab=t5_vocabulary(), model_max_length=model_max_length).save_pretrained(folder)
    return T5TokenizerFast.from_pretrained(folder)


BERT_WORDS = 2000  # whole words of CLIP's vocabulary that become WordPiece entries


def write_bert_vocab(folder: Path, words: int = BERT_WORDS) -> Path:
    """A WordPiece ``vocab.txt`` in BERT's layout (``[PAD]`` first, so pad id 0 as ``bert-base-uncased``;
    ``[UNK]``, ``[CLS]``, ``[SEP]``, ``[MASK]``), then CLIP's first ``words`` lower-case whole-word merges
    and every lower-case letter, digit and punctuation mark alone and as a ``##`` continuation, so any
    uncased English text tokenizes to words where it can and characters where it must. The folder loads
    with ``BertTokenizer.from_pretrained`` as ``bert-base-uncased``'s does."""
    import string

    entries = dict.fromkeys(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    for _, word in clip_whole_words():
        if word == word.lower():
            entries.setdefault(word)
            if len(entries) == words + 5:
                break
    for char in string.ascii_lowercase + string.digits + string.punctuation:
        entries.setdefault(char)
        entries.setdefault("##" + char)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(entries) + "\n", encoding="utf-8")
    return folder
