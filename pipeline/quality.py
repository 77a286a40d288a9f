"""GPT-3's quality classifier: learn what reference text looks like, then filter the crawl with it.

GPT-3 (Brown et al. 2020, appendix A) trained a classifier to tell curated reference text (WebText, books,
Wikipedia) from raw Common Crawl and kept a crawl document when ``np.random.pareto(alpha) > 1 - score`` with
``alpha = 9``. That rule keeps nearly every document the classifier likes while still letting some
low-scoring ones through, so the curated set does not collapse onto whatever narrow style the reference has.
DCLM later showed that a fastText classifier with word n-grams, keeping a fixed top fraction of documents,
works at least as well. This module does all of it:

* :func:`train_quality` trains the fastText classifier on balanced, seeded samples of the two classes,
  evaluates it on a held-out split next to GPT-3's original recipe (hashed features + logistic regression)
  and writes ``model.bin``, ``config.json``, ``eval.json``, ``score_hist.png`` and ``stats.json``. With
  ``folds=K`` it also writes ``model-fold{k}.bin`` for cross-fitting (below).
* :func:`score_documents` / :func:`score_paths` score texts or files with a trained model.
* :func:`run_quality_filter` is the Beam stage: it scores each document, stores ``quality_score`` and keeps
  documents by one of three rules (``pareto``, ``threshold``, ``top_fraction``).

Cross-fitting. A run's negatives are the raw crawl and the filter then scores the same crawl documents.
fastText memorises its training negatives, so every document it trained on scores near 0 and the Pareto
rule keeps ~1 % of the crawl, reference-like pages included. GPT-3 trained on a small sample of a huge crawl,
so nearly every document it scored was unseen; at small scale the same holds only if the classifier never
scores a document it was trained on. ``folds=K`` assigns each negative to fold :func:`fold_of` (a hash of its
id) and trains one model per fold without that fold's negatives; the filter scores a document of fold k with
``model-fold{k}.bin``, which never saw it.

Provenance check. A classifier can separate "reference" from "crawl" by where text comes from (a corpus's
tokenisation, line breaks, typography) rather than by how good it is. ``holdout_positive`` names reference
inputs that training never sees; ``eval.json["left_out"]`` reports how well the model ranks them above the
held-out crawl documents. A score that measures quality transfers to a reference source it never saw.

Bad input never gets a default score: an empty or over-long document is a counted reason (``empty_text``,
``too_long``) in training and in the filter, ``None`` with a ``reason`` from :func:`score_documents` /
:func:`score_paths`; a missing, truncated or foreign model file (one trained with other labels) raises
:class:`QualityError` naming the file before any document is read.

The same :func:`normalize_text` runs at train and at score time, so the model never sees text at scoring
that was prepared differently from what it learned on. The Pareto draw is a pure function of (document id,
run seed): reruns, any number of workers and any runner keep exactly the same documents.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import gzip
import io
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

import apache_beam as beam
import numpy as np
import xxhash

from pipeline.accounting import KEPT, OUTCOMES, WriteOutcomes, dropped, read_outcomes, stats_from_outcomes
from pipeline.runner import RunnerConfig, make_pipeline
from pipeline.stage import fingerprint, finish, is_complete, load_stats, stage_output
from pipeline.tables import count_rows, read_document_tables, sum_jsonl
from schemas.documents import DOCUMENT_SCHEMA, read_documents
from schemas.stats import StageStats

HQ_LABEL = "__label__hq"  # reference text ("high quality")
CC_LABEL = "__label__cc"  # raw crawl
NORMALIZATION_VERSION = "1"  # bump when normalize_text changes: models trained before then score differently
MODEL_FILE = "model.bin"
FOLD_MODEL_FILE = "model-fold{k}.bin"
CONFIG_FILE = "config.json"
DEFAULT_MAX_CHARS = 1_000_000  # Common Crawl truncates records at 1 MiB; longer extracted text is not a page
FOLD_HASH = "xxh64(b'fold\\x00' + key, seed) mod folds; key = id, else 'text:' + xxh64 of the normalised text"


class QualityError(ValueError):
    """A quality model that cannot be used: missing, unreadable, truncated, or trained for other labels."""


# ----------------------------------------------------------------------------------------------------------
# Text preparation and input reading
# ----------------------------------------------------------------------------------------------------------


def normalize_text(text: str) -> str:
    """The one text preparation used for training and for scoring: lowercase, single spaces, one line.

    fastText reads one example per line and rejects newlines at predict time, so every run of whitespace
    (newlines included) becomes one space. Lowercasing keeps the vocabulary small, which matters for a model
    trained on a few thousand documents. NUL is a token separator inside fastText but not in Python, so it
    becomes a space too. A literal ``__label__`` inside a document would be read as a label during training;
    it is defused to the word ``label``.
    """
    if not text:
        return ""
    text = text.lower().replace("\x00", " ").replace("__label__", " label ")
    return " ".join(text.split())


def unscorable_reason(text: str | None, max_chars: int = DEFAULT_MAX_CHARS) -> str | None:
    """Why a document gets no score (``bad_record``, ``empty_text``, ``too_long``), or None when it gets one.

    The one place that decides it, so training, :func:`score_documents` and the filter agree. Length is
    measured on the raw text (characters) before normalisation, so a huge document is rejected without
    being copied; ``max_chars <= 0`` means no limit.
    """
    if not isinstance(text, str):
        return "bad_record"
    if max_chars > 0 and len(text) > max_chars:
        return "too_long"
    if not text.strip():
        return "empty_text"
    return None


def _input_kind(path: str) -> str:
    """``documents`` (Parquet table), ``jsonl`` (one JSON object a line with ``text``) or ``text`` (blocks)."""
    if os.path.isdir(path):
        return "documents"
    name = path.lower()
    if name.endswith(".gz"):
        name = name[: -len(".gz")]
    if name.endswith(".parquet"):
        return "documents"
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    return "text"


def _open_text(path: str) -> io.TextIOBase:
    """Open a (possibly gzipped) text file; undecodable bytes become U+FFFD rather than stopping the read."""
    if path.lower().endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def iter_records(path: str) -> Iterator[tuple[str | None, str | None]]:
    """Yield ``(id, text)`` for every record of one input; ``text`` is None for a record that cannot be read.

    Inputs are document tables (a folder of Parquet files or a file), JSON lines with a ``text`` field (and
    optionally ``id``), or plain text where blank lines separate documents (WikiText, Project Gutenberg and
    most reference dumps come like that). A malformed JSON line or a non-string ``text`` yields ``(id, None)``
    so the caller can count it instead of crashing or silently skipping it.
    """
    kind = _input_kind(path)
    if kind == "documents":
        for row in read_documents(path, columns=["id", "text"]):
            text = row.get("text")
            yield row.get("id"), text if isinstance(text, str) else None
    elif kind == "jsonl":
        with _open_text(path) as fh:
            for line in fh:
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError:
                    yield None, None
                    continue
                if not isinstance(obj, dict):
                    yield None, None
                    continue
                doc_id = obj.get("id")
                text = obj.get("text")
                yield (str(doc_id) if doc_id is not None else None), (text if isinstance(text, str) else None)
    else:
        with _open_text(path) as fh:
            block: list[str] = []
            for line in fh:
                if line.strip():
                    block.append(line)
                elif block:
                    yield None, "".join(block)
                    block = []
            if block:
                yield None, "".join(block)


# ----------------------------------------------------------------------------------------------------------
# Cross-fitting folds
# ----------------------------------------------------------------------------------------------------------


def fold_key(doc_id: str | None, text: str | None) -> str:
    """What decides a document's fold: its id, or for a record without one (plain text blocks) its text.

    The filter stage only scores documents with ids, and a crawl document keeps its id from ``curate/raw``
    (the negatives) to ``curate/`` (what is filtered), so the id is what must agree at train and filter time.
    The text fallback hashes the normalised text, so whitespace or case differences do not move a document.
    """
    if doc_id:
        return str(doc_id)
    return "text:" + xxhash.xxh64_hexdigest(normalize_text(text or "").encode("utf-8"))


def fold_of(key: str, seed: int, folds: int) -> int:
    """The cross-fitting fold in ``[0, folds)`` of a document key (see :func:`fold_key`; an id at filter time).

    A pure, stable hash of (key, training seed), not Python's ``hash`` (salted per process) nor a random
    generator: training and the filter run in different processes, on different machines, and must agree.
    """
    if folds <= 1:
        return 0
    h = xxhash.xxh64_intdigest(f"fold\x00{key}".encode(), seed=seed & 0xFFFFFFFFFFFFFFFF)
    return h % folds


def fold_model_file(k: int) -> str:
    return FOLD_MODEL_FILE.format(k=k)


# ----------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------


@dataclass
class QualityTrainConfig:
    dim: int = field(default=64, metadata={"help": "fastText embedding dimension"})
    epoch: int = field(default=5, metadata={"help": "fastText training epochs"})
    word_ngrams: int = field(default=2, metadata={"help": "fastText word n-gram length (2 = unigrams + bigrams)"})
    min_count: int = field(default=2, metadata={"help": "fastText: ignore words seen fewer times"})
    lr: float = field(default=0.1, metadata={"help": "fastText learning rate"})
    bucket: int = field(
        default=200_000,
        metadata={"help": "fastText hash buckets for word n-grams (model size grows as dim * bucket)"},
    )
    test_fraction: float = field(default=0.2, metadata={"help": "held-out share of each class for evaluation"})
    min_words: int = field(
        default=20,
        metadata={"help": "drop documents with fewer words (headings and fragments teach 'short = good')"},
    )
    max_per_class: int = field(
        default=500_000, metadata={"help": "seeded reservoir sample cap per class, bounds memory (0 = no cap)"}
    )
    seed: int = field(default=0, metadata={"help": "seed for sampling, splitting and fastText"})
    reproducible: bool = field(
        default=True, metadata={"help": "train fastText on one thread so the same inputs give the same model"}
    )
    threads: int = field(default=0, metadata={"help": "fastText threads when not reproducible (0 = all cores)"})
    baseline: bool = field(
        default=True, metadata={"help": "also train GPT-3's hashed-features logistic regression for comparison"}
    )
    baseline_features: int = field(default=2**18, metadata={"help": "baseline HashingVectorizer n_features"})
    baseline_c: float = field(default=1.0, metadata={"help": "baseline LogisticRegression inverse regularisation C"})
    hist_bins: int = field(default=20, metadata={"help": "bins of the held-out score histograms"})
    pareto_alpha: float = field(
        default=9.0, metadata={"help": "alpha for the expected Pareto keep rates reported in eval.json"}
    )
    folds: int = field(
        default=1,
        metadata={
            "help": "cross-fitting: K >= 2 also trains model-fold{k}.bin without the negatives of fold k, so the"
            " filter never scores a crawl document with a model that trained on it (K more trainings)"
        },
    )
    max_chars: int = field(
        default=DEFAULT_MAX_CHARS,
        metadata={"help": "drop documents longer than this many characters as too_long (0 = no limit)"},
    )
    holdout_positive: list[str] = field(
        default_factory=list,
        metadata={
            "help": "reference inputs left out of training (file names or path globs): eval.json['left_out']"
            " reports their ROC AUC against the held-out crawl, a check that the score is not provenance"
        },
    )


def _collect_class(
    paths: list[str], name: str, cfg: QualityTrainConfig, stats: StageStats
) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """Read one class's inputs, drop unusable documents, cap with a seeded reservoir sample.

    Returns ``(fold key, normalised line)`` pairs: the key (:func:`fold_key`) is what cross-fitting assigns
    folds by. The reservoir keeps memory at ``max_per_class`` documents however large the input, and is a
    uniform sample, unlike taking the first N (which would favour the first file).
    """
    rng = random.Random(f"ccgpt-quality-reservoir:{cfg.seed}:{name}")
    reservoir: list[tuple[str, str]] = []
    seen = 0
    counts = {"read": 0}
    for path in paths:
        for doc_id, text in iter_records(path):
            counts["read"] += 1
            stats.read += 1
            reason = unscorable_reason(text, cfg.max_chars)
            if reason is not None:
                stats.drop(reason)
                continue
            line = normalize_text(text)
            if not line:
                stats.drop("empty_text")
                continue
            if line.count(" ") + 1 < cfg.min_words:
                stats.drop("too_short")
                continue
            seen += 1
            item = (fold_key(doc_id, line), line)
            if cfg.max_per_class <= 0 or len(reservoir) < cfg.max_per_class:
                reservoir.append(item)
            else:
                j = rng.randrange(seen)
                if j < cfg.max_per_class:
                    reservoir[j] = item
    if seen > len(reservoir):
        stats.drop("max_per_class", seen - len(reservoir))
    counts["usable"] = len(reservoir)
    return reservoir, counts


def _fasttext_scores(model: Any, lines: list[str]) -> list[float]:
    """P(high quality) for already-normalised lines: the softmax probability of :data:`HQ_LABEL`.

    fastText adds a tiny epsilon inside its log-probabilities, so values are clipped to [0, 1].
    """
    if not lines:
        return []
    labels, probs = model.predict(lines, k=-1, threshold=0.0)
    out = []
    for labs, ps in zip(labels, probs):
        p = 0.0
        for lab, pr in zip(labs, ps):
            if lab == HQ_LABEL:
                p = float(pr)
                break
        out.append(min(1.0, max(0.0, p)))
    return out


def _binary_metrics(y: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support, roc_auc_score

    pred = (scores >= threshold).astype(int)
    precision, recall, f1, _ = precision_recall_fscore_support(y, pred, average="binary", pos_label=1, zero_division=0)
    return {
        "roc_auc": float(roc_auc_score(y, scores)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "accuracy": float(accuracy_score(y, pred)),
    }


def _train_baseline(
    train_texts: list[str], train_y: np.ndarray, test_texts: list[str], cfg: QualityTrainConfig
) -> np.ndarray:
    """GPT-3's original classifier: hashed term frequencies of whitespace tokens, logistic regression.

    GPT-3 used Spark's ``Tokenizer`` (lowercase, split on whitespace) and ``HashingTF``; ``HashingVectorizer``
    with ``str.split`` on the normalised text is the same feature space.
    """
    from sklearn.feature_extraction.text import HashingVectorizer
    from sklearn.linear_model import LogisticRegression

    vec = HashingVectorizer(
        n_features=cfg.baseline_features,
        tokenizer=str.split,
        token_pattern=None,
        lowercase=False,
        alternate_sign=False,
        norm="l2",
    )
    clf = LogisticRegression(C=cfg.baseline_c, max_iter=1000, random_state=cfg.seed)
    clf.fit(vec.transform(train_texts), train_y)
    return clf.predict_proba(vec.transform(test_texts))[:, list(clf.classes_).index(1)]


def _plot_histograms(path: str, edges: list[float], pos: list[int], neg: list[int], title: str) -> None:
    """Held-out score histograms of both classes; uses the Agg canvas directly, never pyplot's global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    widths = np.diff(edges)
    ax.bar(edges[:-1], pos, width=widths, align="edge", alpha=0.6, label="reference (positive)")
    ax.bar(edges[:-1], neg, width=widths, align="edge", alpha=0.6, label="crawl (negative)")
    ax.set_xlabel("P(high quality)")
    ax.set_ylabel("held-out documents")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)


# fastText's trainer runs in a child process whose glibc malloc hands out every block of 64 KiB or more as
# fresh zero-filled pages (MALLOC_MMAP_THRESHOLD_). The fastText build on PyPI reads parts of its weight
# matrices before writing them, so inside a long-lived process the model depends on whatever memory was freed
# earlier: the same seed gives different models, or "Encountered NaN." (with MALLOC_PERTURB_ set, every run
# changes). Zero-filled pages make those reads the zeros upstream intends, and the model a function of its
# inputs and seed again.
_FASTTEXT_CHILD = (
    "import json, sys\n"
    "import fasttext\n"
    "a = json.load(sys.stdin)\n"
    "out = a.pop('output')\n"
    "fasttext.train_supervised(**a).save_model(out)\n"
)


def train_fasttext(input_path: str, output_path: str, **params: Any) -> None:
    """Train a supervised fastText model from ``input_path`` into ``output_path`` (see the note above)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    proc = subprocess.run(
        [sys.executable, "-c", _FASTTEXT_CHILD],
        input=json.dumps({"input": input_path, "output": output_path, **params}),
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0 or not os.path.exists(output_path):
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
        hint = " (lower lr or fewer epochs)" if any("NaN" in line for line in tail) else ""
        raise RuntimeError(f"fastText training failed{hint}: {' | '.join(tail)}")


def _train_model(tmp: str, name: str, train: list[tuple[str, int]], cfg: QualityTrainConfig, threads: int) -> None:
    """Write ``train`` as a fastText file in ``tmp``, train ``tmp/name`` from it, delete the file again.

    The file is a copy of the training data; the model is the artefact.
    """
    train_file = os.path.join(tmp, f"{name}.train.txt")
    with open(train_file, "w", encoding="utf-8") as fh:
        for text, y in train:
            fh.write(f"{HQ_LABEL if y else CC_LABEL} {text}\n")
    train_fasttext(
        train_file,
        os.path.join(tmp, name),
        dim=cfg.dim,
        epoch=cfg.epoch,
        wordNgrams=cfg.word_ngrams,
        minCount=cfg.min_count,
        lr=cfg.lr,
        bucket=cfg.bucket,
        loss="softmax",
        thread=threads,
        seed=cfg.seed,
        verbose=0,
    )
    os.remove(train_file)


def _fold_training_sets(
    pos_items: list[tuple[str, str]],
    neg_items: list[tuple[str, str]],
    test_pos: list[int],
    test_neg: list[int],
    folds: int,
    seed: int,
) -> list[tuple[list[tuple[str, int]], dict[str, Any]]]:
    """Training data of each cross-fitting model: ``[(train lines, counts)]``, empty for ``folds < 2``.

    Model k learns from every usable positive and every usable negative outside fold k, both minus the
    held-out test split (so all models are evaluated on the same unseen documents), the larger class
    downsampled (seeded) to the smaller one as for ``model.bin``. It draws from the whole usable pool rather
    than from ``model.bin``'s training set because a crawl is usually far larger than the reference: the
    out-of-fold negatives that balancing left out of ``model.bin`` fill the fold model back up.

    Folds go by id because the filter scores the curated version of a document, whose text line cleaning
    may have changed, while its id is the raw one's. But the crawl is not deduplicated yet (dedup runs after
    this filter): the same page often comes under several ids, which can land in different folds. So model
    k also leaves out every out-of-fold negative whose text equals that of a fold-k negative; otherwise it
    would memorise, through the copy, a document it later scores (``n_duplicates_left_out`` counts them).
    """
    if folds < 2:
        return []
    held_pos, held_neg = set(test_pos), set(test_neg)
    pos_pool = [i for i in range(len(pos_items)) if i not in held_pos]
    neg_fold = [fold_of(key, seed, folds) for key, _ in neg_items]
    out = []
    for k in range(folds):
        rng = random.Random(f"ccgpt-quality-fold:{seed}:{folds}:{k}")
        in_fold = {line for (_, line), f in zip(neg_items, neg_fold) if f == k}
        outside = [i for i in range(len(neg_items)) if i not in held_neg and neg_fold[i] != k]
        neg_pool = [i for i in outside if neg_items[i][1] not in in_fold]
        m = min(len(pos_pool), len(neg_pool))
        if m < 1:
            raise ValueError(
                f"cross-fitting fold {k} of {folds} has no training data ({len(pos_pool)} positive,"
                f" {len(neg_pool)} negative documents outside it): use fewer folds or more data"
            )
        kpos = rng.sample(pos_pool, m) if len(pos_pool) > m else list(pos_pool)
        kneg = rng.sample(neg_pool, m) if len(neg_pool) > m else list(neg_pool)
        train = [(pos_items[i][1], 1) for i in kpos] + [(neg_items[i][1], 0) for i in kneg]
        rng.shuffle(train)
        counts = {
            "model": fold_model_file(k),
            "n_train_positive": len(kpos),
            "n_train_negative": len(kneg),
            "n_fold_negatives": sum(f == k for f in neg_fold),  # usable negatives this model never sees
            "n_duplicates_left_out": len(outside) - len(neg_pool),
        }
        out.append((train, counts))
    return out


def split_holdout(positives: list[str], patterns: list[str]) -> tuple[list[str], list[str]]:
    """``(trained, left_out)`` positives: a path is left out when a pattern matches it or its file name.

    Patterns are file names or globs (``fnmatch``), compared with the path as given and with its last
    component (a folder's name for a document table). A pattern that matches no input is an error, as is
    leaving out every positive: both are typos that would otherwise silently change what is measured.
    """
    if not patterns:
        return list(positives), []

    def name(path: str) -> str:
        return os.path.basename(path.rstrip("/")) or path

    def matches(path: str, pattern: str) -> bool:
        return fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(name(path), pattern)

    unmatched = [pat for pat in patterns if not any(matches(p, pat) for p in positives)]
    if unmatched:
        raise ValueError(f"holdout_positive {unmatched} match no positive input (positives: {positives})")
    left_out = [p for p in positives if any(matches(p, pat) for pat in patterns)]
    trained = [p for p in positives if p not in left_out]
    if not trained:
        raise ValueError(f"holdout_positive {patterns} leaves no positive input to train on")
    return trained, left_out


def train_quality(
    positives: list[str], negatives: list[str], out_dir: str, cfg: QualityTrainConfig, force: bool = False
) -> dict[str, Any]:
    """Train the quality classifier (reference = positive, crawl = negative) and return its evaluation.

    The larger class is downsampled (seeded) to the smaller one so the classifier's 0.5 is a real decision
    boundary and its scores are comparable across runs with different input sizes. Each class is split
    ``test_fraction`` held out; the metrics in ``eval.json`` are on that split only. The output folder
    appears all at once (written under a temporary name, then renamed), and a rerun with the same inputs,
    config and code returns the stored evaluation unless ``force``.

    With ``cfg.folds = K >= 2`` (cross-fitting) every negative is assigned to fold :func:`fold_of` of its id
    (its text's hash when it has none) and ``model-fold{k}.bin`` is trained, like ``model.bin``, on the
    positives and the negatives outside fold k (see :func:`_fold_training_sets`). ``model.bin`` stays the
    model for new data; the filter scores each document of fold k with ``model-fold{k}.bin``. That costs K
    more fastText trainings (about K + 1 times the training time, each fold model being about as large as
    ``model.bin`` when the crawl outnumbers the reference). ``eval.json`` then also holds each fold model's
    held-out ROC AUC and, under ``cross_fit.train_negatives``, ``model.bin``'s memorised scores of its own
    training negatives next to their out-of-fold scores: the gap cross-fitting closes.
    """
    import sklearn

    if not positives or not negatives:
        raise ValueError("train_quality needs at least one positive and one negative input")
    if not 0.0 < cfg.test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {cfg.test_fraction}")
    if cfg.folds < 1:
        raise ValueError(f"folds must be at least 1, got {cfg.folds}")
    fp = fingerprint(
        "quality_train", [*positives, *negatives], {"config": dataclasses.asdict(cfg), "positives": len(positives)}
    )
    eval_path = os.path.join(out_dir, "eval.json")
    if not force and is_complete(out_dir, fp) and os.path.exists(eval_path):
        with open(eval_path, encoding="utf-8") as fh:
            return json.load(fh)

    trained_positives, left_out_paths = split_holdout(positives, list(cfg.holdout_positive))
    stats = StageStats(stage="quality_train")
    pos_items, pos_counts = _collect_class(trained_positives, "positive", cfg, stats)
    neg_items, neg_counts = _collect_class(negatives, "negative", cfg, stats)
    left_items, left_counts = _collect_class(left_out_paths, "left_out", cfg, stats) if left_out_paths else ([], {})
    if left_out_paths and not left_items:
        raise ValueError(f"the left-out positives {left_out_paths} hold no usable document")
    if left_items:
        stats.drop("left_out", len(left_items))  # scored for eval.json["left_out"], never trained on
    n = min(len(pos_items), len(neg_items))
    if n < 2:
        raise ValueError(
            f"too few usable documents to train and evaluate: {len(pos_items)} positive, {len(neg_items)} negative"
            f" (after dropping {dict(stats.dropped)})"
        )
    # Indices into the collected items: sampling and shuffling an index list consumes the generator exactly as
    # the item list would, and the indices tell the cross-fitting below which documents are held out.
    rng = random.Random(f"ccgpt-quality-split:{cfg.seed}")
    pos_idx, neg_idx = list(range(len(pos_items))), list(range(len(neg_items)))
    if len(pos_idx) > n:
        stats.drop("balance_downsampled", len(pos_idx) - n)
        pos_idx = rng.sample(pos_idx, n)
    if len(neg_idx) > n:
        stats.drop("balance_downsampled", len(neg_idx) - n)
        neg_idx = rng.sample(neg_idx, n)
    stats.kept = 2 * n
    rng.shuffle(pos_idx)
    rng.shuffle(neg_idx)
    n_test = min(n - 1, max(1, round(cfg.test_fraction * n)))
    test = [(pos_items[i][1], 1) for i in pos_idx[:n_test]] + [(neg_items[i][1], 0) for i in neg_idx[:n_test]]
    train = [(pos_items[i][1], 1) for i in pos_idx[n_test:]] + [(neg_items[i][1], 0) for i in neg_idx[n_test:]]
    rng.shuffle(train)  # fastText's SGD sees lines in file order: interleave the classes
    folds = max(1, cfg.folds)
    fold_sets = _fold_training_sets(pos_items, neg_items, pos_idx[:n_test], neg_idx[:n_test], folds, cfg.seed)

    with stage_output(out_dir) as tmp:
        threads = 1 if cfg.reproducible else (cfg.threads or os.cpu_count() or 1)
        _train_model(tmp, MODEL_FILE, train, cfg, threads)
        model = load_model(os.path.join(tmp, MODEL_FILE))
        for k, (fold_train, _) in enumerate(fold_sets):
            _train_model(tmp, fold_model_file(k), fold_train, cfg, threads)

        test_texts = [t for t, _ in test]
        y_test = np.array([y for _, y in test])
        scores = np.array(_fasttext_scores(model, test_texts))
        result: dict[str, Any] = _binary_metrics(y_test, scores)
        result.update(
            threshold=0.5,
            n_train=len(train),
            n_test=len(test),
            n_train_per_class=n - n_test,
            n_test_per_class=n_test,
        )
        left_texts = [line for _, line in left_items]
        if cfg.baseline:
            base_all = _train_baseline(
                [t for t, _ in train], np.array([y for _, y in train]), test_texts + left_texts, cfg
            )
            base_scores, base_left = base_all[: len(test_texts)], base_all[len(test_texts) :]
            result.update({f"baseline_{k}": v for k, v in _binary_metrics(y_test, base_scores).items()})
        edges = np.linspace(0.0, 1.0, cfg.hist_bins + 1)
        pos_scores, neg_scores = scores[y_test == 1], scores[y_test == 0]
        result["score_hist"] = {
            "bins": [float(e) for e in edges],
            "positive": [int(c) for c in np.histogram(pos_scores, bins=edges)[0]],
            "negative": [int(c) for c in np.histogram(neg_scores, bins=edges)[0]],
        }
        # What GPT-3's rule would keep of each held-out class: E[(2 - s) ** -alpha].
        result["pareto_alpha"] = cfg.pareto_alpha
        result["pareto_expected_keep_rate"] = {
            "positive": float(np.mean((2.0 - pos_scores) ** -cfg.pareto_alpha)),
            "negative": float(np.mean((2.0 - neg_scores) ** -cfg.pareto_alpha)),
        }
        if left_items:
            # The left-out reference against the same held-out crawl documents: a classifier that learned a
            # source's formatting ranks an unseen source no better than chance.
            left_scores = np.array(_fasttext_scores(model, left_texts))
            y_left = np.concatenate([np.ones(len(left_scores), dtype=int), np.zeros(len(neg_scores), dtype=int)])
            left_metrics = _binary_metrics(y_left, np.concatenate([left_scores, neg_scores]))
            result["left_out"] = {
                "paths": list(left_out_paths),
                "n": len(left_items),
                "n_negative": int(len(neg_scores)),
                "roc_auc": left_metrics["roc_auc"],
                "recall": left_metrics["recall"],  # share of the left-out reference scoring >= 0.5
                "mean_score": float(np.mean(left_scores)),
                "pareto_expected_keep_rate": float(np.mean((2.0 - left_scores) ** -cfg.pareto_alpha)),
            }
            if cfg.baseline:
                result["left_out"]["baseline_roc_auc"] = _binary_metrics(
                    y_left, np.concatenate([base_left, base_scores[y_test == 0]])
                )["roc_auc"]
        fold_files = [counts["model"] for _, counts in fold_sets]
        result["folds"] = folds
        result["fold_models"] = fold_files
        if fold_sets:
            fold_models = [load_model(os.path.join(tmp, f)) for f in fold_files]
            per_fold = []
            for fm, (_, counts) in zip(fold_models, fold_sets):
                fold_test = np.array(_fasttext_scores(fm, test_texts))
                per_fold.append({**counts, "roc_auc": _binary_metrics(y_test, fold_test)["roc_auc"]})
            # What cross-fitting changes, on the crawl documents model.bin trained on: their in-sample scores
            # (memorised) against the scores of the fold model that never saw them, which the filter uses.
            seen = [neg_items[i] for i in neg_idx[n_test:]]
            in_sample = np.array(_fasttext_scores(model, [line for _, line in seen]))
            out_of_fold = np.zeros(len(seen))
            by_fold: dict[int, list[int]] = {}
            for j, (key, _) in enumerate(seen):
                by_fold.setdefault(fold_of(key, cfg.seed, folds), []).append(j)
            for k, js in by_fold.items():
                out_of_fold[js] = _fasttext_scores(fold_models[k], [seen[j][1] for j in js])
            result["cross_fit"] = {
                "seed": cfg.seed,
                "fold_hash": FOLD_HASH,
                "per_fold": per_fold,
                "train_negatives": {
                    "n": len(seen),
                    "mean_score_in_sample": float(np.mean(in_sample)),
                    "mean_score_out_of_fold": float(np.mean(out_of_fold)),
                    "pareto_expected_keep_rate_in_sample": float(np.mean((2.0 - in_sample) ** -cfg.pareto_alpha)),
                    "pareto_expected_keep_rate_out_of_fold": float(np.mean((2.0 - out_of_fold) ** -cfg.pareto_alpha)),
                },
            }
        with open(os.path.join(tmp, "eval.json"), "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
            fh.write("\n")
        with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as fh:
            json.dump(
                {
                    "config": dataclasses.asdict(cfg),
                    "positives": list(trained_positives),
                    "left_out_positives": list(left_out_paths),
                    "negatives": list(negatives),
                    "labels": {"positive": HQ_LABEL, "negative": CC_LABEL},
                    "normalization_version": NORMALIZATION_VERSION,
                    "fasttext_threads": threads,
                    "sklearn_version": sklearn.__version__,
                    # what run_quality_filter reads to route each document to the model that never saw it
                    "folds": folds,
                    "fold_models": fold_files,
                    "fold_seed": cfg.seed,
                    "fold_hash": FOLD_HASH,
                },
                fh,
                indent=2,
            )
            fh.write("\n")
        _plot_histograms(
            os.path.join(tmp, "score_hist.png"),
            result["score_hist"]["bins"],
            result["score_hist"]["positive"],
            result["score_hist"]["negative"],
            f"held-out scores (ROC AUC {result['roc_auc']:.3f})",
        )
        stats.extra.update(
            positive=pos_counts,
            negative=neg_counts,
            n_train=result["n_train"],
            n_test=result["n_test"],
            roc_auc=result["roc_auc"],
            folds=folds,
        )
        if left_items:
            stats.extra["left_out"] = {**left_counts, "roc_auc": result["left_out"]["roc_auc"]}
        if fold_sets:
            stats.extra["fold_models"] = fold_files
        if cfg.baseline:
            stats.extra["baseline_roc_auc"] = result["baseline_roc_auc"]
        finish(stats, tmp, fp)
    return result


# ----------------------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------------------


def resolve_model_path(model_path: str) -> str:
    """Accept the model file itself or the folder :func:`train_quality` wrote."""
    if os.path.isdir(model_path) or model_path.endswith("/"):
        return os.path.join(model_path, MODEL_FILE)
    return model_path


FASTTEXT_MAGIC = 793712314  # fastText's file magic (int32) followed by its format version
FASTTEXT_VERSION = 12
_SUPERVISED = 3  # fastText's model_name enum: cbow 1, skipgram 2, supervised 3


def inspect_model(path: str) -> dict[str, Any]:
    """Read a local fastText ``.bin`` file's structure without loading it; :class:`QualityError` if unusable.

    fastText itself loads a truncated file without complaint (the missing weights are whatever memory held)
    and only rejects a wrong magic number, so the file is walked here: header, arguments, dictionary, and
    for an unquantised model the exact byte size of both weight matrices. Returns ``labels``, ``dim``,
    ``words``, ``quantized`` and ``bytes``. Labels are checked by :func:`check_model`.
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise QualityError(f"quality model not found: {path}") from None
    except OSError as exc:
        raise QualityError(f"quality model {path} cannot be read: {exc}") from None

    def bad(why: str) -> QualityError:
        return QualityError(f"quality model {path} is not a usable fastText model: {why}")

    try:
        magic, version = struct.unpack_from("<ii", data, 0)
        if magic != FASTTEXT_MAGIC:
            raise bad("wrong magic number (not a fastText .bin file)")
        if version != FASTTEXT_VERSION:
            raise bad(f"fastText file version {version}, expected {FASTTEXT_VERSION}")
        # Args: dim ws epoch minCount neg wordNgrams loss model bucket minn maxn lrUpdateRate (int32), t (double)
        args = struct.unpack_from("<12id", data, 8)
        dim, model_kind = args[0], args[7]
        if model_kind != _SUPERVISED:
            raise bad("an unsupervised (word vector) model, not a classifier")
        off = 8 + struct.calcsize("<12id")
        n_entries, n_words, n_labels = struct.unpack_from("<iii", data, off)
        _, prune_size = struct.unpack_from("<qq", data, off + 12)
        off += 28
        if n_entries < 0 or n_words < 0 or n_labels < 0 or n_words + n_labels != n_entries:
            raise bad("corrupt dictionary header")
        labels = []
        for _ in range(n_entries):
            end = data.index(b"\0", off)
            word = data[off:end]
            (kind,) = struct.unpack_from("<b", data, end + 9)  # after the int64 count
            if kind == 1:
                labels.append(word.decode("utf-8", errors="replace"))
            off = end + 10
        off += 8 * max(0, prune_size)
        quantized = bool(data[off])
        if not quantized:
            for _ in range(2):  # input matrix, then (after its own quantisation flag) the output matrix
                rows, cols = struct.unpack_from("<qq", data, off + 1)
                if rows < 0 or cols != dim:
                    raise bad("corrupt weight matrix header")
                off += 1 + 16 + 4 * rows * cols
            if off != size:
                raise bad(f"{size} bytes where its header describes {off} (truncated or damaged)")
            if n_labels and rows != n_labels:
                raise bad("output matrix does not match the labels")
    except (struct.error, ValueError, IndexError) as exc:
        if isinstance(exc, QualityError):
            raise
        raise bad("truncated or damaged") from None
    return {"labels": labels, "dim": dim, "words": n_words, "quantized": quantized, "bytes": size}


def check_model(path: str) -> dict[str, Any]:
    """:func:`inspect_model` plus the labels this module trains: ``__label__hq`` and ``__label__cc``, only.

    A model trained for something else (a language or topic classifier) would score every document with a
    probability of a label it does not have: 0.0, a silent default. This refuses it instead.
    """
    info = inspect_model(path)
    labels = info["labels"]
    if sorted(labels) != sorted([HQ_LABEL, CC_LABEL]):
        shown = ", ".join(labels[:6]) + (f", ... ({len(labels)} labels)" if len(labels) > 6 else "")
        raise QualityError(
            f"quality model {path} was trained with labels [{shown}], not [{HQ_LABEL}, {CC_LABEL}]"
            " (train it with `ccgpt quality train`)"
        )
    return info


def _load_local(path: str) -> Any:
    import fasttext

    check_model(path)
    try:
        return fasttext.load_model(path)
    except (ValueError, RuntimeError, MemoryError) as exc:
        raise QualityError(f"quality model {path} cannot be loaded: {exc}") from None


def _copy_remote(path: str, local: str) -> None:
    from apache_beam.io.filesystems import FileSystems

    try:
        if not FileSystems.exists(path):
            raise QualityError(f"quality model not found: {path}")
        with FileSystems.open(path) as src, open(local, "wb") as dst:
            shutil.copyfileobj(src, dst)
    except QualityError:
        raise
    except Exception as exc:  # any filesystem's own error type
        raise QualityError(f"quality model {path} cannot be read: {exc}") from None


def validate_model(model_path: str) -> dict[str, Any]:
    """Check a model (local or on any Beam filesystem) without loading it; :class:`QualityError` if unusable."""
    return _on_local_copy(resolve_model_path(model_path), check_model)


def _on_local_copy(path: str, fn: Any) -> Any:
    """``fn(local_path)`` for a local model, or for a temporary copy of a remote one (fastText reads only local
    files); errors name the original path, not the temporary copy."""
    if "://" not in path:
        return fn(path)
    with tempfile.TemporaryDirectory(prefix="ccgpt-quality-") as tmp:
        local = os.path.join(tmp, MODEL_FILE)
        _copy_remote(path, local)
        try:
            return fn(local)
        except QualityError as exc:
            raise QualityError(str(exc).replace(local, path)) from None


def load_model(model_path: str) -> Any:
    """Load a fastText model from a local path or any Beam filesystem (``gs://``, ``s3://``, ...).

    fastText only reads local files, so a remote model is copied to a temporary file first; that is what lets
    Dataflow or Flink workers run the filter with the model in object storage. The file is checked first
    (:func:`check_model`): a missing, damaged or foreign model raises :class:`QualityError` naming it.
    """
    return _on_local_copy(resolve_model_path(model_path), _load_local)


@lru_cache(maxsize=4)
def _cached_model(path: str, mtime_ns: int, size: int) -> Any:
    return load_model(path)


def _model_for(model_path: str) -> Any:
    """Load once per (path, file version): repeated calls from a CLI or notebook do not reload the model."""
    path = resolve_model_path(model_path)
    try:
        st = os.stat(path)
    except OSError:
        return load_model(path)  # remote, or missing: load_model says which
    return _cached_model(os.path.abspath(path), st.st_mtime_ns, st.st_size)


def score_documents(
    model_path: str, texts: Iterable[str | None], max_chars: int = DEFAULT_MAX_CHARS
) -> list[float | None]:
    """P(high quality) for each text, with the same normalisation as training.

    A text that cannot be scored (empty, longer than ``max_chars``, not a string) gets ``None``, never a
    made-up number; :func:`unscorable_reason` says why. The model is checked before any text is read.
    """
    model = _model_for(model_path)
    lines: list[str | None] = []
    for text in texts:
        line = normalize_text(text) if unscorable_reason(text, max_chars) is None else ""
        lines.append(line or None)
    good = [line for line in lines if line is not None]
    it = iter(_fasttext_scores(model, good))
    return [next(it) if line is not None else None for line in lines]


def score_paths(
    model_path: str, paths: list[str], batch_size: int = 1024, max_chars: int = DEFAULT_MAX_CHARS
) -> Iterator[dict[str, Any]]:
    """Score every record of the given inputs (same formats as training) for the command line.

    Yields ``{"path", "index", "id", "score"}`` per record in input order; ``id`` is None where the format
    has none (plain text blocks). A record that gets no score has ``score`` None and a ``reason``
    (``bad_record``, ``empty_text`` or ``too_long``).
    """
    model = _model_for(model_path)
    for path in paths:
        batch: list[tuple[int, str | None, str | None]] = []

        def flush(batch=batch, path=path) -> Iterator[dict[str, Any]]:
            reasons: dict[int, str] = {}
            good: list[tuple[int, str]] = []
            for i, _, t in batch:
                reason = unscorable_reason(t, max_chars)
                line = normalize_text(t) if reason is None else ""
                if reason is None and not line:
                    reason = "empty_text"
                if reason is None:
                    good.append((i, line))
                else:
                    reasons[i] = reason
            scores = dict(zip((i for i, _ in good), _fasttext_scores(model, [line for _, line in good])))
            for i, d, _ in batch:
                rec: dict[str, Any] = {"path": path, "index": i, "id": d, "score": scores.get(i)}
                if i in reasons:
                    rec["reason"] = reasons[i]
                yield rec

        for index, (doc_id, text) in enumerate(iter_records(path)):
            batch.append((index, doc_id, text))
            if len(batch) >= batch_size:
                yield from flush(batch)
                batch = []
        yield from flush(batch)


# ----------------------------------------------------------------------------------------------------------
# Keep rules (pure functions: the Beam stage and the tests share them)
# ----------------------------------------------------------------------------------------------------------


def _unit_hash(doc_id: str, seed: int, salt: str) -> float:
    """A uniform number in [0, 1) from (id, seed): 53 bits of xxh64, the resolution of a float64."""
    h = xxhash.xxh64_intdigest(f"{salt}\x00{doc_id}".encode(), seed=seed & 0xFFFFFFFFFFFFFFFF)
    return (h >> 11) * (1.0 / (1 << 53))


def pareto_draw(doc_id: str, seed: int, alpha: float) -> float:
    """The document's draw from ``np.random.pareto(alpha)`` (Lomax: ``P(X > x) = (1 + x) ** -alpha``).

    Computed by inverse transform of a hash of (id, seed) rather than a numpy Generator: numpy does not
    promise that a Generator's stream stays the same across releases, while this formula does, so the same
    run seed keeps the same documents on any machine, runner, worker count and numpy version.
    """
    u = _unit_hash(doc_id, seed, "pareto")
    return (1.0 - u) ** (-1.0 / alpha) - 1.0


def pareto_keep(score: float, doc_id: str, seed: int, alpha: float = 9.0) -> bool:
    """GPT-3's rule: keep when the Pareto draw exceeds ``1 - score``, i.e. with probability ``(2 - s) ** -alpha``."""
    return pareto_draw(doc_id, seed, alpha) > 1.0 - score


def pareto_keep_probability(score: float, alpha: float = 9.0) -> float:
    """The analytic keep probability of :func:`pareto_keep` for a score in [0, 1]."""
    return (2.0 - score) ** -alpha


def rank_key(score: float, doc_id: str, seed: int) -> tuple[float, float]:
    """Order for ``top_fraction``: by score, ties broken by a hash of the id so exactly k documents pass."""
    return (score, _unit_hash(doc_id, seed, "tie"))


def exact_cutoff(keys: list[tuple[float, float]], fraction: float) -> tuple[float, float] | None:
    """The smallest rank key among the top ``round(fraction * n)``; None means keep nothing."""
    k = round(fraction * len(keys))
    if k <= 0:
        return None
    return sorted(keys, reverse=True)[min(k, len(keys)) - 1]


def approximate_cutoff(quantiles: list[tuple[float, float]], fraction: float) -> tuple[float, float] | None:
    """The cutoff from ``ApproximateQuantiles`` (evenly spaced ranks, min first, max last)."""
    if not quantiles or fraction <= 0.0:
        return None
    if fraction >= 1.0:
        return quantiles[0]
    idx = round((1.0 - fraction) * (len(quantiles) - 1))
    return quantiles[max(0, min(len(quantiles) - 1, idx))]


# ----------------------------------------------------------------------------------------------------------
# The Beam filter stage
# ----------------------------------------------------------------------------------------------------------


@dataclass
class QualityFilterConfig:
    model: str = field(default="", metadata={"help": "model.bin, or the folder `quality train` wrote"})
    rule: Literal["pareto", "threshold", "top_fraction"] = field(
        default="pareto",
        metadata={"help": "pareto (GPT-3) | threshold (score >= threshold) | top_fraction (DCLM: best share)"},
    )
    alpha: float = field(default=9.0, metadata={"help": "Pareto shape; keep probability is (2 - score) ** -alpha"})
    seed: int = field(default=0, metadata={"help": "run seed of the per-document Pareto draws and tie breaks"})
    threshold: float = field(default=0.5, metadata={"help": "rule=threshold: keep documents scoring at least this"})
    top_fraction: float = field(default=0.1, metadata={"help": "rule=top_fraction: share of scored documents kept"})
    quantiles: Literal["exact", "approximate"] = field(
        default="exact",
        metadata={
            "help": "rule=top_fraction cutoff: exact (gathers every score, fine to ~10^7 docs) or approximate"
            " (ApproximateQuantiles, bounded memory)"
        },
    )
    num_quantiles: int = field(default=1001, metadata={"help": "quantiles=approximate: resolution of the cutoff"})
    hist_bins: int = field(default=20, metadata={"help": "bins of the score histograms in stats.json"})
    max_chars: int = field(
        default=DEFAULT_MAX_CHARS,
        metadata={"help": "documents longer than this many characters are dropped as too_long (0 = no limit)"},
    )
    cross_fit: bool = field(
        default=True,
        metadata={
            "help": "use the fold models (model-fold{k}.bin) when the model folder has them: each document is"
            " scored by the model that did not train on it"
        },
    )


def _read_model_config(folder: str) -> dict[str, Any] | None:
    """The ``config.json`` :func:`train_quality` wrote beside the model, local or remote; None when absent."""
    path = os.path.join(folder, CONFIG_FILE) if "://" not in folder else folder.rstrip("/") + "/" + CONFIG_FILE
    if "://" not in path:
        if not os.path.exists(path):
            return None
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    from apache_beam.io.filesystems import FileSystems

    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as fh:
        return json.loads(fh.read().decode("utf-8"))


def cross_fit_models(model_path: str) -> tuple[list[str], int]:
    """The fold model paths beside ``model_path`` (a model.bin or its folder) and their fold seed.

    Read from the folder's ``config.json``; ``([], 0)`` when the model was trained without folds or has no
    ``config.json`` beside it (a model file copied on its own is scored as a single model).
    """
    path = resolve_model_path(model_path)
    folder = path.rsplit("/", 1)[0] if "://" in path else os.path.dirname(path)
    config = _read_model_config(folder)
    if not config or int(config.get("folds", 1)) < 2:
        return [], 0
    files = config.get("fold_models") or [fold_model_file(k) for k in range(int(config["folds"]))]
    if len(files) != int(config["folds"]):
        raise ValueError(f"{folder}/{CONFIG_FILE}: {config['folds']} folds but fold models {files}")
    join = (lambda f: f"{folder}/{f}") if "://" in folder else (lambda f: os.path.join(folder, f))
    return [join(f) for f in files], int(config.get("fold_seed", config.get("config", {}).get("seed", 0)))


def _with_outcome(outcome: str) -> beam.pvalue.TaggedOutput:
    return beam.pvalue.TaggedOutput(OUTCOMES, outcome)


class ScoreDocuments(beam.DoFn):
    """Score each document and set ``quality_score``; unreadable or empty documents become counted drops.

    The score is rounded to float32 before anything uses it, so the stored ``quality_score`` alone decides
    the keep rule: anyone can re-derive the decision from the output table.

    With ``fold_paths`` (cross-fitting) a document whose id falls in fold k (:func:`fold_of` with the
    training seed) is scored by fold model k, which never trained on it. Every scored document has an id,
    so ``model.bin`` is then never used and not loaded; ``setup`` loads the models this DoFn uses once per
    worker, not once per bundle.
    """

    def __init__(
        self,
        model_path: str,
        fold_paths: list[str] | None = None,
        fold_seed: int = 0,
        max_chars: int = DEFAULT_MAX_CHARS,
    ):
        self.model_path = model_path
        self.max_chars = max_chars
        self.fold_paths = list(fold_paths or [])
        self.fold_seed = fold_seed
        self._model: Any = None
        self._fold_models: list[Any] = []

    def setup(self) -> None:
        if self.fold_paths:
            self._fold_models = [load_model(p) for p in self.fold_paths]
        else:
            self._model = load_model(self.model_path)

    def _model_of(self, doc_id: str) -> Any:
        if self._fold_models:
            return self._fold_models[fold_of(doc_id, self.fold_seed, len(self._fold_models))]
        return self._model

    def process(self, row: dict[str, Any]) -> Iterator[Any]:
        doc_id = row.get("id") if isinstance(row, dict) else None
        text = row.get("text") if isinstance(row, dict) else None
        if not isinstance(doc_id, str) or not doc_id or not isinstance(text, str):
            yield _with_outcome(dropped("bad_record"))
            return
        reason = unscorable_reason(text, self.max_chars)
        if reason is not None:
            yield _with_outcome(dropped(reason))
            return
        line = normalize_text(text)
        if not line:
            yield _with_outcome(dropped("empty_text"))
            return
        try:
            (score,) = _fasttext_scores(self._model_of(doc_id), [line])
        except (ValueError, RuntimeError, UnicodeError):
            yield _with_outcome(dropped("score_error"))
            return
        out = {name: row.get(name) for name in DOCUMENT_SCHEMA.names}
        out["quality_score"] = float(np.float32(score))
        yield out


class ApplyKeepRule(beam.DoFn):
    """Keep or drop each scored document by the configured rule; dropped ones count as ``quality``."""

    def __init__(self, cfg: QualityFilterConfig):
        self.cfg = cfg

    def process(self, row: dict[str, Any], cutoff: tuple[float, float] | None = None) -> Iterator[Any]:
        cfg = self.cfg
        score = row["quality_score"]
        if cfg.rule == "pareto":
            keep = pareto_keep(score, row["id"], cfg.seed, cfg.alpha)
        elif cfg.rule == "threshold":
            keep = score >= cfg.threshold
        else:
            keep = cutoff is not None and rank_key(score, row["id"], cfg.seed) >= tuple(cutoff)
        if keep:
            yield row
            yield _with_outcome(KEPT)
        else:
            yield _with_outcome(dropped("quality"))


def _rank_key_of(row: dict[str, Any], seed: int) -> tuple[float, float]:
    return rank_key(row["quality_score"], row["id"], seed)


def _hist_entries(row: dict[str, Any], which: str, bins: int) -> tuple[str, float]:
    b = min(bins - 1, max(0, int(row["quality_score"] * bins)))
    return (f"hist:{which}:{b}", 1.0)


def _expected_keep_entry(row: dict[str, Any], alpha: float) -> tuple[str, float]:
    return ("pareto_expected_keep", pareto_keep_probability(row["quality_score"], alpha))


def _fold_entry(row: dict[str, Any], seed: int, folds: int) -> tuple[str, float]:
    return (f"fold:{fold_of(row['id'], seed, folds)}", 1.0)


def _score_entry(row: dict[str, Any]) -> tuple[str, float]:
    return ("score_sum", float(row["quality_score"]))


def _cutoff_entries(cutoff: tuple[float, float] | None) -> Iterator[tuple[str, float]]:
    if cutoff is not None:
        yield ("cutoff_score", float(cutoff[0]))


def _summary_json(kv: tuple[str, float]) -> str:
    return json.dumps({"key": kv[0], "value": kv[1]}, sort_keys=True)


def _read_summary(folder: str) -> dict[str, float]:
    return sum_jsonl(os.path.join(folder, "quality_summary.jsonl"), "key", "value", float)


def run_quality_filter(
    inputs: list[str], out_dir: str, cfg: QualityFilterConfig, runner: RunnerConfig, force: bool = False
) -> StageStats:
    """Score every document with the quality model, store ``quality_score``, keep by ``cfg.rule``.

    Output: ``out_dir/documents-*.parquet`` (kept documents, scored), ``outcomes.jsonl``,
    ``quality_summary.jsonl`` (histogram counts and sums), ``stats.json`` whose ``extra`` holds the rule,
    ``keep_rate`` (kept / scored), ``mean_score``, the score histograms of scored and kept documents and,
    for ``pareto``, the analytic ``pareto_expected_keep_rate`` to compare the realised rate with.
    The model files take part in the fingerprint, so retraining them reruns the filter.

    When the model folder holds fold models (``train_quality`` with ``folds >= 2``) and ``cfg.cross_fit``,
    each document is scored by the fold model that did not train on it, so crawl documents that were the
    classifier's negatives are not scored by a model that memorised them; ``stats.extra`` then records
    ``cross_fit_folds`` (0 when every document is scored by ``model.bin``) and ``scored_per_fold``.
    """
    if not cfg.model:
        raise ValueError("quality filter needs cfg.model (model.bin or the quality train output folder)")
    if cfg.rule not in ("pareto", "threshold", "top_fraction"):
        raise ValueError(f"unknown quality rule {cfg.rule!r}")
    if cfg.rule == "top_fraction" and not 0.0 <= cfg.top_fraction <= 1.0:
        raise ValueError(f"top_fraction must be in [0, 1], got {cfg.top_fraction}")
    if cfg.rule == "pareto" and cfg.alpha <= 0:
        raise ValueError(f"alpha must be positive, got {cfg.alpha}")
    model_path = resolve_model_path(cfg.model)
    if "://" not in model_path:
        model_path = os.path.abspath(model_path)  # workers may run in another working directory
    # Every model file is checked here, before any document is read: a missing, damaged or foreign model is
    # a QualityError naming it, not a failure on a worker after the inputs were read.
    validate_model(model_path)
    fold_paths, fold_seed = cross_fit_models(model_path) if cfg.cross_fit else ([], 0)
    for path in fold_paths:
        try:
            validate_model(path)
        except QualityError as exc:
            raise QualityError(f"{exc} (a cross-fitting model; or set cross_fit: false)") from None
    folds = len(fold_paths)
    fp = fingerprint("quality_filter", [*inputs, model_path, *fold_paths], cfg)
    if not force and is_complete(out_dir, fp):
        return load_stats(out_dir)

    bins = max(1, cfg.hist_bins)
    with stage_output(out_dir) as tmp:
        with make_pipeline(runner, "quality", total=count_rows(inputs)) as p:
            docs = read_document_tables(p, inputs)
            score = ScoreDocuments(model_path, fold_paths, fold_seed, cfg.max_chars)
            scored = docs | "Score" >> beam.ParDo(score).with_outputs(OUTCOMES, main="scored")
            side: dict[str, Any] = {}
            summary_parts = []
            if cfg.rule == "top_fraction":
                keys = scored.scored | "RankKeys" >> beam.Map(_rank_key_of, cfg.seed)
                if cfg.quantiles == "approximate":
                    cutoff = (
                        keys
                        | "Quantiles" >> beam.transforms.stats.ApproximateQuantiles.Globally(max(2, cfg.num_quantiles))
                        | "Cutoff" >> beam.Map(approximate_cutoff, cfg.top_fraction)
                    )
                else:
                    cutoff = (
                        keys
                        | "AllKeys" >> beam.combiners.ToList()
                        | "Cutoff" >> beam.Map(exact_cutoff, cfg.top_fraction)
                    )
                side["cutoff"] = beam.pvalue.AsSingleton(cutoff)
                summary_parts.append(cutoff | "CutoffEntry" >> beam.FlatMap(_cutoff_entries))
            kept = scored.scored | "Keep" >> beam.ParDo(ApplyKeepRule(cfg), **side).with_outputs(OUTCOMES, main="kept")
            _ = kept.kept | "Write" >> beam.io.WriteToParquet(
                os.path.join(tmp, "documents"), schema=DOCUMENT_SCHEMA, file_name_suffix=".parquet"
            )
            _ = (scored[OUTCOMES], kept[OUTCOMES]) | "AllOutcomes" >> beam.Flatten() | WriteOutcomes(tmp)

            summary_parts.append(scored.scored | "HistAll" >> beam.Map(_hist_entries, "scored", bins))
            summary_parts.append(kept.kept | "HistKept" >> beam.Map(_hist_entries, "kept", bins))
            summary_parts.append(scored.scored | "ScoreSum" >> beam.Map(_score_entry))
            if folds:
                summary_parts.append(scored.scored | "FoldCounts" >> beam.Map(_fold_entry, fold_seed, folds))
            if cfg.rule == "pareto":
                summary_parts.append(scored.scored | "ExpectedKeep" >> beam.Map(_expected_keep_entry, cfg.alpha))
            _ = (
                tuple(summary_parts)
                | "FlattenSummary" >> beam.Flatten()
                | "SumSummary" >> beam.CombinePerKey(sum)
                | "SummaryJson" >> beam.Map(_summary_json)
                | "WriteSummary"
                >> beam.io.WriteToText(os.path.join(tmp, "quality_summary.jsonl"), shard_name_template="", num_shards=1)
            )

        stats = stats_from_outcomes("quality_filter", read_outcomes(tmp))
        summary = _read_summary(tmp)
        n_scored = stats.kept + stats.dropped.get("quality", 0)
        stats.extra["rule"] = cfg.rule
        stats.extra["scored"] = n_scored
        stats.extra["keep_rate"] = stats.kept / n_scored if n_scored else 0.0
        stats.extra["mean_score"] = summary.get("score_sum", 0.0) / n_scored if n_scored else None
        stats.extra["score_hist"] = {
            "bins": [i / bins for i in range(bins + 1)],
            "scored": [int(summary.get(f"hist:scored:{b}", 0)) for b in range(bins)],
            "kept": [int(summary.get(f"hist:kept:{b}", 0)) for b in range(bins)],
        }
        if cfg.rule == "pareto":
            stats.extra["alpha"] = cfg.alpha
            stats.extra["pareto_expected_keep_rate"] = (
                summary.get("pareto_expected_keep", 0.0) / n_scored if n_scored else None
            )
        elif cfg.rule == "threshold":
            stats.extra["threshold"] = cfg.threshold
        else:
            stats.extra["top_fraction"] = cfg.top_fraction
            stats.extra["cutoff_score"] = summary.get("cutoff_score")
        stats.extra["model"] = model_path
        stats.extra["cross_fit_folds"] = folds
        if folds:
            stats.extra["fold_models"] = fold_paths
            stats.extra["scored_per_fold"] = [int(summary.get(f"fold:{k}", 0)) for k in range(folds)]
        finish(stats, tmp, fp)
    return stats
