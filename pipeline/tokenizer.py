"""Byte-level BPE tokenizers: train one on curated documents, load GPT-2's, hash them by content.

Why byte-level BPE: every byte sequence encodes (no unknown token), and it is what GPT-2/GPT-3 use, so a
tokenizer trained here and OpenAI's GPT-2 vocabulary are interchangeable downstream. Everything is built on
Hugging Face ``tokenizers`` (Rust, multi-threaded) and reads and writes its files, local or on an object
store, through :mod:`pipeline.fs`: nothing is fetched from a model hub at run time.

Three decisions worth knowing:

* The end-of-text token ``<|endoftext|>`` is a *special* token that only ccgpt inserts (after each document
  when packing). A literal ``<|endoftext|>`` inside a web page is encoded as ordinary text
  (``encode_special_tokens = True``), so scraped text can never forge a document boundary.
* :func:`tokenizer_content_hash` hashes the vocabulary and merges as raw bytes, not the files, so GPT-2 from
  ``encoder.json`` + ``vocab.bpe``, from a tiktoken rank file, or from a ``tokenizer.json`` hashes equal:
  the manifest pins *what* the tokenizer does, not how it was stored.
* Training samples documents by a seeded hash of their id (bottom-k), so the sample is reproducible and does
  not depend on how the input table is split into files.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from pipeline import fs
from pipeline.commit import check_active_owner, verified
from pipeline.stage import Stage
from pipeline.tables import document_files
from schemas.documents import validate_document_schema
from schemas.stats import StageStats

EOT = "<|endoftext|>"
TOKENIZER_FILE = "tokenizer.json"
INFO_FILE = "tokenizer_info.json"
CANONICAL_FORMAT = "ccgpt-bpe-canonical-v1"


class TokenizerError(ValueError):
    """A tokenizer path or file that cannot be used (missing, unknown format, no end-of-text token)."""


@dataclass
class TokenizerConfig:
    vocab_size: int = field(
        default=50257, metadata={"help": "target vocabulary size incl. the 256 byte tokens and <|endoftext|>"}
    )
    min_frequency: int = field(default=2, metadata={"help": "a pair must occur this often in the sample to merge"})
    max_documents: int = field(
        default=200_000, metadata={"help": "sample at most this many documents (seeded hash of the id)"}
    )
    max_chars_per_document: int = field(
        default=20_000, metadata={"help": "truncate each sampled document to this many characters"}
    )
    max_total_chars: int = field(
        default=200_000_000, metadata={"help": "cap on the sample's total characters (bounds training memory)"}
    )
    max_token_length: int = field(
        default=0, metadata={"help": "longest token in characters (0 = unlimited); curbs '======'-like tokens"}
    )
    seed: int = field(default=0, metadata={"help": "seed of the document sample"})

    def __post_init__(self) -> None:
        if self.vocab_size < 257:
            raise TokenizerError(f"vocab_size {self.vocab_size} is below the 256 byte tokens + {EOT}")


# --------------------------------------------------------------------------------------------- byte mapping


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (what byte-level BPE vocabularies are written in)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


_BYTE_TO_CHAR = _bytes_to_unicode()
_CHAR_TO_BYTE = {c: b for b, c in _BYTE_TO_CHAR.items()}


def _token_str(b: bytes) -> str:
    return "".join(_BYTE_TO_CHAR[x] for x in b)


def _canonical_token(s: str) -> str:
    """A vocabulary entry as the hex of the bytes it stands for (``raw:`` if it is not byte-level text)."""
    try:
        return bytes(_CHAR_TO_BYTE[c] for c in s).hex()
    except KeyError:
        return "raw:" + s.encode("utf-8").hex()


# --------------------------------------------------------------------------------------------- building


def _byte_level(tok: Tokenizer) -> Tokenizer:
    """Attach GPT-2's pre-tokenizer (its regex, no prefix space) and the byte-level decoder."""
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def _finalise(tok: Tokenizer, where: str) -> Tokenizer:
    """Make sure ``<|endoftext|>`` is a special token, and that text can never produce it."""
    if tok.token_to_id(EOT) is None:
        raise TokenizerError(f"{where}: tokenizer has no {EOT} token")
    special = {t.content for t in tok.get_added_tokens_decoder().values() if t.special}
    if EOT not in special:
        tok.add_special_tokens([EOT])  # already in the vocabulary (GPT-2's encoder.json): keeps its id
    tok.encode_special_tokens = True  # not serialised by tokenizers: set on every load
    return tok


def _read_tiktoken_ranks(path: str) -> dict[bytes, int]:
    ranks: dict[bytes, int] = {}
    with fs.open_read(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
            except ValueError as e:
                raise TokenizerError(f"{path}:{lineno}: not a tiktoken rank line ({e})") from None
    if not ranks:
        raise TokenizerError(f"{path}: empty tiktoken rank file")
    return ranks


def _merges_from_ranks(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """Recover BPE merges from tiktoken ranks: the last merge that builds each token, in rank order.

    tiktoken merges the adjacent pair whose concatenation has the lowest rank. Running that on a token's own
    bytes, allowing only merges of lower rank than the token, leaves exactly the two parts its final merge
    joins. For GPT-2 this reproduces ``vocab.bpe`` merge for merge (tested).
    """
    merges: list[tuple[bytes, bytes]] = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) == 1:
            continue
        parts = [bytes([b]) for b in token]
        while True:
            best_i, best_rank = -1, None
            for i in range(len(parts) - 1):
                r = ranks.get(parts[i] + parts[i + 1])
                if r is not None and (best_rank is None or r < best_rank):
                    best_i, best_rank = i, r
            if best_rank is None or best_rank >= rank:
                break
            parts = parts[:best_i] + [parts[best_i] + parts[best_i + 1]] + parts[best_i + 2 :]
        if len(parts) != 2:
            raise TokenizerError(f"tiktoken token {token!r} (rank {rank}) is not the merge of two lower-rank tokens")
        merges.append((parts[0], parts[1]))
    return merges


def _from_tiktoken(path: str) -> Tokenizer:
    """A tiktoken rank file as a byte-level BPE with GPT-2's pre-tokenizer; ``<|endoftext|>`` gets the next id.

    The rank file does not record its pre-tokenization regex; GPT-2's (r50k_base) is assumed, which is right
    for ``r50k_base`` / ``gpt2`` and wrong for ``cl100k_base`` or later encodings.
    """
    ranks = _read_tiktoken_ranks(path)
    vocab = {_token_str(t): r for t, r in ranks.items()}
    merges = [(_token_str(a), _token_str(b)) for a, b in _merges_from_ranks(ranks)]
    tok = _byte_level(Tokenizer(models.BPE(vocab, merges)))
    tok.add_special_tokens([EOT])
    return tok


def _from_vocab_merges(vocab_path: str, merges_path: str) -> Tokenizer:
    """GPT-2's ``encoder.json`` + ``vocab.bpe`` (or Hugging Face's ``vocab.json`` + ``merges.txt``); ``tokenizers``
    reads this pair only from local paths, so files on an object store are downloaded first."""
    try:
        with fs.local_copy(vocab_path) as vocab, fs.local_copy(merges_path) as merges:
            return _byte_level(Tokenizer(models.BPE.from_file(vocab, merges)))
    except Exception as e:  # tokenizers raises plain Exception on malformed files
        raise TokenizerError(f"{vocab_path} + {merges_path}: cannot load BPE vocabulary/merges ({e})") from None


def _first_in(folder: str, names: Sequence[str]) -> str | None:
    for name in names:
        p = fs.join(folder, name)
        if fs.is_file(p):
            return p
    return None


_VOCAB_NAMES = ("encoder.json", "vocab.json")
_MERGES_NAMES = ("vocab.bpe", "merges.txt")


def _looks_like_tiktoken(path: str) -> bool:
    with fs.open_read(path) as fh:
        first = fh.readline().split()
    if len(first) != 2 or not first[1].isdigit():
        return False
    try:
        base64.b64decode(first[0], validate=True)
    except ValueError:
        return False
    return True


def load_tokenizer(path: str) -> Tokenizer:
    """Load a byte-level BPE tokenizer, local or on an object store, ready to encode documents safely.

    ``path`` may be a ``tokenizer.json``; a folder holding one (or holding GPT-2's pair, or one
    ``*.tiktoken`` file); either file of GPT-2's ``encoder.json``/``vocab.json`` + ``vocab.bpe``/``merges.txt``
    pair (the other is looked up beside it); or a tiktoken rank file. Never downloads from a model hub.
    """
    if fs.is_dir(path):
        if fs.is_file(fs.join(path, TOKENIZER_FILE)):
            return load_tokenizer(fs.join(path, TOKENIZER_FILE))
        vocab = _first_in(path, _VOCAB_NAMES)
        merges = _first_in(path, _MERGES_NAMES)
        if vocab and merges:
            return _finalise(_from_vocab_merges(vocab, merges), path)
        ranks = fs.match(fs.join(path, "*.tiktoken"))
        if len(ranks) == 1:
            return load_tokenizer(ranks[0].path)
        raise TokenizerError(
            f"{path}: folder holds no {TOKENIZER_FILE}, no vocabulary+merges pair and not exactly one .tiktoken file"
        )
    if not fs.exists(path):
        raise TokenizerError(
            f"{path}: tokenizer not found (give a tokenizer.json, its folder, GPT-2's "
            "encoder.json + vocab.bpe, or a .tiktoken rank file)"
        )
    name = os.path.basename(path)
    if name.endswith(".json"):
        verified(path)  # a committed tokenizer stage's file: as committed (checksum)
        try:
            data = fs.read_json(path)
        except (OSError, ValueError) as e:
            raise TokenizerError(f"{path}: not readable JSON ({e})") from None
        if isinstance(data, dict) and isinstance(data.get("model"), dict):
            try:
                tok = Tokenizer.from_str(json.dumps(data))
            except Exception as e:
                raise TokenizerError(f"{path}: not a valid tokenizers file ({e})") from None
            return _finalise(tok, path)
        merges = _first_in(os.path.dirname(path), _MERGES_NAMES)
        if merges is None:
            raise TokenizerError(f"{path}: a vocabulary file needs vocab.bpe or merges.txt beside it")
        return _finalise(_from_vocab_merges(path, merges), path)
    if name in _MERGES_NAMES or name.endswith(".bpe"):
        vocab = _first_in(os.path.dirname(path), _VOCAB_NAMES)
        if vocab is None:
            raise TokenizerError(f"{path}: a merges file needs encoder.json or vocab.json beside it")
        return _finalise(_from_vocab_merges(vocab, path), path)
    if _looks_like_tiktoken(path):
        return _finalise(_from_tiktoken(path), path)
    raise TokenizerError(f"{path}: unknown tokenizer file format")


# --------------------------------------------------------------------------------------------- identity


def tokenizer_content_hash(tok: Tokenizer) -> str:
    """sha256 over the canonical vocabulary (id -> token bytes, special tokens by name) and the merges.

    Tokens are written as the hex of the bytes they stand for, so the hash does not depend on the file format
    (``encoder.json``, tiktoken ranks, ``tokenizer.json``) or on JSON key order.
    """
    data = json.loads(tok.to_str())
    model = data.get("model") or {}
    vocab: dict[str, int] = model.get("vocab") or {}
    by_id: dict[int, str] = {i: _canonical_token(s) for s, i in vocab.items()}
    for added in data.get("added_tokens") or []:
        by_id[int(added["id"])] = ("special:" if added.get("special") else "added:") + added["content"]
    size = max(by_id) + 1 if by_id else 0
    tokens = [by_id.get(i) for i in range(size)]
    merges = []
    for m in model.get("merges") or []:
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        merges.append([_canonical_token(a), _canonical_token(b)])
    payload = {"format": CANONICAL_FORMAT, "model": model.get("type"), "tokens": tokens, "merges": merges}
    return hashlib.sha256(json.dumps(payload, separators=(",", ":")).encode()).hexdigest()


def tokenizer_info(tok: Tokenizer, path: str | None = None) -> dict[str, Any]:
    """The fields of ``schemas.manifest.TokenizerInfo`` for a loaded tokenizer."""
    eot = tok.token_to_id(EOT)
    if eot is None:
        raise TokenizerError(f"tokenizer has no {EOT} token")
    return {
        "kind": "byte-level-bpe",
        "content_hash": tokenizer_content_hash(tok),
        "vocab_size": tok.get_vocab_size(with_added_tokens=True),
        "eot_id": eot,
        "path": path,
    }


# --------------------------------------------------------------------------------------------- encoding


def encode_batch(
    tok: Tokenizer, texts: Sequence[str], append_eot: bool = False, batch_size: int = 1024
) -> list[list[int]]:
    """Encode many texts in parallel batches (Rust threads), optionally ending each with ``<|endoftext|>``.

    Uses ``encode_batch_fast`` (no character offsets: not needed for training, and cheaper). The tokenizer must
    come from :func:`load_tokenizer` (or :func:`train_tokenizer`'s file) so literal ``<|endoftext|>`` text
    stays text.
    """
    eot = tok.token_to_id(EOT) if append_eot else None
    if append_eot and eot is None:
        raise TokenizerError(f"tokenizer has no {EOT} token")
    out: list[list[int]] = []
    for start in range(0, len(texts), max(1, batch_size)):
        batch = list(texts[start : start + batch_size])
        for enc in tok.encode_batch_fast(batch, add_special_tokens=False):
            ids = enc.ids
            if eot is not None:
                ids.append(eot)
            out.append(ids)
    return out


# --------------------------------------------------------------------------------------------- training


def _sample_key(seed: int, doc_id: str) -> int:
    return xxhash.xxh64_intdigest(f"tokenizer\x00{seed}\x00{doc_id}".encode())


def _scan_sample(files: list[str], cfg: TokenizerConfig, stats: StageStats) -> list[tuple[int, str]]:
    """Pass 1: choose the sample (bottom-k of a seeded id hash, then the character cap in hash order).

    Only ids, hashes and text lengths are kept in memory, so the pass is bounded whatever the input size.
    Returns ``(hash, id)`` of the chosen documents, in hash order.
    """
    heap: list[tuple[int, str, int]] = []  # (-hash, id, chars): a max-heap of the k smallest hashes
    for f in files:
        with fs.open_arrow(f) as src:
            pf = pq.ParquetFile(src)
            validate_document_schema(pf.schema_arrow, where=f)
            for batch in pf.iter_batches(columns=["id", "text"], batch_size=4096):
                lengths = pc.fill_null(pc.utf8_length(batch.column("text")), 0).to_pylist()
                for doc_id, n in zip(batch.column("id").to_pylist(), lengths):
                    stats.read += 1
                    if doc_id is None or n == 0:
                        stats.drop("empty_text" if doc_id is not None else "missing_id")
                        continue
                    item = (-_sample_key(cfg.seed, doc_id), doc_id, min(n, cfg.max_chars_per_document))
                    if len(heap) < cfg.max_documents:
                        heapq.heappush(heap, item)
                    elif item > heap[0]:
                        heapq.heapreplace(heap, item)
    chosen: list[tuple[int, str]] = []
    total = 0
    for neg, doc_id, n in sorted(heap, reverse=True):
        if total + n > cfg.max_total_chars:
            break
        total += n
        chosen.append((-neg, doc_id))
    candidates = stats.read - sum(stats.dropped.values())
    stats.kept = len(chosen)
    stats.drop("not_sampled", candidates - len(chosen))
    stats.extra["sample_chars"] = total
    return chosen


def _collect_texts(files: list[str], chosen: list[tuple[int, str]], max_chars: int) -> list[str]:
    """Pass 2: the chosen documents' texts (truncated), in hash order so the result ignores file layout."""
    rank = {doc_id: i for i, (_, doc_id) in enumerate(chosen)}
    texts: list[str | None] = [None] * len(chosen)
    for f in files:
        with fs.open_arrow(f) as src:
            for batch in pq.ParquetFile(src).iter_batches(columns=["id", "text"], batch_size=4096):
                for doc_id, text in zip(batch.column("id").to_pylist(), batch.column("text").to_pylist()):
                    i = rank.get(doc_id)
                    if i is not None and texts[i] is None and text:
                        texts[i] = text[:max_chars]
    return [t for t in texts if t is not None]


def new_bpe_trainer(cfg: TokenizerConfig) -> trainers.BpeTrainer:
    kwargs: dict[str, Any] = {}
    if cfg.max_token_length > 0:
        kwargs["max_token_length"] = cfg.max_token_length
    return trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: nothing is ever unknown
        show_progress=False,
        **kwargs,
    )


def train_tokenizer(inputs: list[str], out_dir: str, cfg: TokenizerConfig, force: bool = False) -> dict[str, Any]:
    """Train a byte-level BPE on a seeded, capped sample of document tables into ``out_dir`` (local or on an
    object store), committed by its ``stats.json`` (:mod:`pipeline.commit`).

    Output folder: ``tokenizer.json`` (Hugging Face tokenizers format), ``tokenizer_info.json`` (the manifest's
    ``TokenizerInfo`` fields plus sample sizes) and ``stats.json`` (stage ``tokenizer``: read = documents seen,
    kept = documents sampled, dropped ``not_sampled`` / ``empty_text``). Returns the info dict. A rerun with the
    same inputs, config and code skips training.
    """
    stage = Stage("tokenizer", out_dir, inputs, cfg, force, module=__name__)
    if not stage.complete():
        files = [f for path in inputs for f in document_files(path)]

        def body(out: str) -> StageStats:
            stats = StageStats(stage="tokenizer")
            chosen = _scan_sample(files, cfg, stats)
            texts = _collect_texts(files, chosen, cfg.max_chars_per_document)
            if not texts:
                raise TokenizerError(f"no non-empty documents to train a tokenizer on in {inputs}")
            tok = _byte_level(Tokenizer(models.BPE()))
            tok.train_from_iterator(texts, trainer=new_bpe_trainer(cfg), length=len(texts))
            check_active_owner()  # the tokenizer's fixed name: only while this attempt owns the folder
            copy_tokenizer(tok, out)
            tok = load_tokenizer(fs.join(out, TOKENIZER_FILE))
            info = tokenizer_info(tok, path=TOKENIZER_FILE)
            info.update(sample_documents=len(texts), sample_chars=stats.extra["sample_chars"], seed=cfg.seed)
            fs.write_json(fs.join(out, INFO_FILE), info)
            stats.extra.update(vocab_size=info["vocab_size"], content_hash=info["content_hash"])
            return stats

        stage.run(body)
    return fs.read_json(fs.join(out_dir, INFO_FILE))


def copy_tokenizer(tok: Tokenizer, folder: str) -> str:
    """Save ``tok`` as ``folder/tokenizer.json`` (local or on an object store), the bytes ``Tokenizer.save``
    writes, so a shard folder carries the tokenizer that made it. Written in place: the stage that writes
    the folder commits it."""
    return fs.write_text(fs.join(folder, TOKENIZER_FILE), tok.to_str(pretty=True))
