"""Training the quality classifier (``ccgpt quality train``): sample -> fit -> evaluate -> cross-fit analysis -> write.

GPT-3 (Brown et al. 2020, appendix A) trained a classifier to tell curated reference text (WebText, books,
Wikipedia) from raw Common Crawl; DCLM later showed that a fastText classifier with word n-grams works at
least as well. :func:`train_quality` trains that fastText classifier on balanced, seeded samples of the two
classes, evaluates it on a held-out split next to GPT-3's original recipe (hashed features + logistic
regression) and writes ``model.bin``, ``config.json``, ``eval.json``, ``score_hist.png`` and ``stats.json``.
With ``folds=K`` it also writes ``model-fold{k}.bin`` for cross-fitting (:mod:`pipeline.quality.folds`).

Provenance check. A classifier can separate "reference" from "crawl" by where text comes from (a corpus's
tokenisation, line breaks, typography) rather than by how good it is. ``holdout_positive`` names reference
inputs that training never sees; ``eval.json["left_out"]`` reports how well the model ranks them above the
held-out crawl documents. A score that measures quality transfers to a reference source it never saw.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import io
import json
import os
import random
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline import fs
from pipeline.commit import check_active_owner
from pipeline.quality.folds import FOLD_HASH, fold_model_file, fold_of
from pipeline.quality.model import CC_LABEL, CONFIG_FILE, HQ_LABEL, MODEL_FILE, fasttext_scores, load_model
from pipeline.quality.sample import SAMPLE_HASH, SampleSpec, draw_samples
from pipeline.quality.text import (
    DEFAULT_MAX_CHARS,
    NORMALIZATION_VERSION,
)
from pipeline.runner import RunnerConfig
from pipeline.stage import Stage
from schemas.stats import StageStats

EVAL_FILE = "eval.json"
# the sampling pipeline's runner when none is given: one in-process worker starts in about a second, and the
# sample does not depend on it
SAMPLE_RUNNER = RunnerConfig(num_workers=1, progress=False)
HIST_FILE = "score_hist.png"


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
        default=500_000,
        metadata={
            "help": "documents per class drawn for training, the smallest hashes of their ids (bounds the"
            " trainer's memory; 0 = no cap)"
        },
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

    def __post_init__(self) -> None:
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if self.folds < 1:
            raise ValueError(f"folds must be at least 1, got {self.folds}")

    @property
    def fasttext_threads(self) -> int:
        return 1 if self.reproducible else (self.threads or os.cpu_count() or 1)


# -- sample: which documents each model learns from and is tested on ----------------------------------------

Item = tuple[str, str]  # (fold key, normalised line)
Example = tuple[str, int]  # (normalised line, 1 for reference / 0 for crawl)


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


def _fold_training_sets(
    pos_items: list[Item],
    neg_items: list[Item],
    test_pos: list[int],
    test_neg: list[int],
    folds: int,
    seed: int,
) -> list[tuple[list[Example], dict[str, Any]]]:
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


@dataclass
class TrainingSample:
    """What one training run learns from and is tested on, decided before any model is trained.

    ``train`` and ``test`` are ``model.bin``'s balanced split; ``train_negatives`` are the crawl documents
    among ``train`` (what the cross-fit analysis re-scores); ``left_out`` the usable documents of the left-out
    reference inputs; ``fold_sets`` each fold model's training lines and counts; ``counts`` what each class's
    inputs held (``read``, ``usable``).
    """

    train: list[Example]
    test: list[Example]
    n_train_per_class: int
    n_test_per_class: int
    train_negatives: list[Item]
    left_out: list[Item]
    fold_sets: list[tuple[list[Example], dict[str, Any]]]
    counts: dict[str, dict[str, int]]

    @property
    def test_texts(self) -> list[str]:
        return [t for t, _ in self.test]

    @property
    def test_labels(self) -> np.ndarray:
        return np.array([y for _, y in self.test])

    @property
    def fold_files(self) -> list[str]:
        return [counts["model"] for _, counts in self.fold_sets]


def sample(
    positives: list[str],
    negatives: list[str],
    left_out_paths: list[str],
    cfg: QualityTrainConfig,
    stats: StageStats,
    runner: RunnerConfig,
    folder: str,
) -> TrainingSample:
    """Draw both classes (and the left-out reference), balance them, split off ``test_fraction`` per class.

    Each class's usable documents are drawn in Beam by a hash of their key, at most ``max_per_class`` of them
    (:mod:`pipeline.quality.sample`, side files in ``folder``). The larger class is then downsampled (seeded)
    to the smaller one so the classifier's 0.5 is a real decision boundary and its scores are comparable
    across runs with different input sizes. ``stats`` counts every document read and why each one not
    trained on was dropped.
    """
    classes = {"positive": positives, "negative": negatives}
    if left_out_paths:
        classes["left_out"] = left_out_paths
    spec = SampleSpec(cfg.min_words, cfg.max_chars, cfg.max_per_class, cfg.seed)
    drawn = draw_samples(classes, spec, runner, folder, stats)
    pos_items, pos_counts = drawn["positive"].items, drawn["positive"].counts
    neg_items, neg_counts = drawn["negative"].items, drawn["negative"].counts
    left_items, left_counts = (drawn["left_out"].items, drawn["left_out"].counts) if left_out_paths else ([], {})
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
    # the item list would, and the indices tell the cross-fitting which documents are held out.
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
    counts = {"positive": pos_counts, "negative": neg_counts}
    if left_items:
        counts["left_out"] = left_counts
    return TrainingSample(
        train=train,
        test=test,
        n_train_per_class=n - n_test,
        n_test_per_class=n_test,
        train_negatives=[neg_items[i] for i in neg_idx[n_test:]],
        left_out=left_items,
        fold_sets=_fold_training_sets(pos_items, neg_items, pos_idx[:n_test], neg_idx[:n_test], cfg.folds, cfg.seed),
        counts=counts,
    )


# -- fit: fastText models --------------------------------------------------------------------------------

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
    """Train a supervised fastText model from ``input_path`` into ``output_path``, both local files (fastText
    takes nothing else; see the note above)."""
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
    if proc.returncode != 0 or not fs.exists(output_path):
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
        hint = " (lower lr or fewer epochs)" if any("NaN" in line for line in tail) else ""
        raise RuntimeError(f"fastText training failed{hint}: {' | '.join(tail)}")


def _train_model(work: str, name: str, train: list[Example], cfg: QualityTrainConfig) -> None:
    """Write ``train`` as a fastText file in the local folder ``work``, train ``work/name`` from it, delete the
    file again.

    The file is a copy of the training data; the model is the artefact.
    """
    train_file = os.path.join(work, f"{name}.train.txt")
    with fs.open_write(train_file) as fh:
        for text, y in train:
            fh.write(f"{HQ_LABEL if y else CC_LABEL} {text}\n".encode())
    train_fasttext(
        train_file,
        os.path.join(work, name),
        dim=cfg.dim,
        epoch=cfg.epoch,
        wordNgrams=cfg.word_ngrams,
        minCount=cfg.min_count,
        lr=cfg.lr,
        bucket=cfg.bucket,
        loss="softmax",
        thread=cfg.fasttext_threads,
        seed=cfg.seed,
        verbose=0,
    )
    fs.delete([train_file])


def fit(work: str, data: TrainingSample, cfg: QualityTrainConfig) -> None:
    """Train ``model.bin`` and, with cross-fitting, every ``model-fold{k}.bin`` into the local folder ``work``."""
    _train_model(work, MODEL_FILE, data.train, cfg)
    for k, (fold_train, _) in enumerate(data.fold_sets):
        _train_model(work, fold_model_file(k), fold_train, cfg)


# -- evaluate: held-out metrics ---------------------------------------------------------------------------


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


def _expected_keep_rate(scores: np.ndarray, alpha: float) -> float:
    """What GPT-3's Pareto rule would keep of documents with these scores: E[(2 - s) ** -alpha]."""
    return float(np.mean((2.0 - scores) ** -alpha))


def _train_baseline(train: list[Example], texts: list[str], cfg: QualityTrainConfig) -> np.ndarray:
    """GPT-3's original classifier trained on ``train``: its P(reference) for each of ``texts``.

    Hashed term frequencies of whitespace tokens and logistic regression: GPT-3 used Spark's ``Tokenizer``
    (lowercase, split on whitespace) and ``HashingTF``; ``HashingVectorizer`` with ``str.split`` on the
    normalised text is the same feature space.
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
    clf.fit(vec.transform([t for t, _ in train]), np.array([y for _, y in train]))
    return clf.predict_proba(vec.transform(texts))[:, list(clf.classes_).index(1)]


def _against_crawl(scores: np.ndarray, crawl_scores: np.ndarray) -> dict[str, float]:
    """:func:`_binary_metrics` of ``scores`` as positives against ``crawl_scores`` (held-out negatives)."""
    y = np.concatenate([np.ones(len(scores), dtype=int), np.zeros(len(crawl_scores), dtype=int)])
    return _binary_metrics(y, np.concatenate([scores, crawl_scores]))


def evaluate(model: Any, data: TrainingSample, cfg: QualityTrainConfig, left_out_paths: list[str]) -> dict[str, Any]:
    """``eval.json``'s metrics of ``model.bin`` (and of GPT-3's baseline) on the held-out split only, its
    score histograms, the expected Pareto keep rates and, with left-out positives, how it ranks those."""
    test_texts, y_test = data.test_texts, data.test_labels
    scores = np.array(fasttext_scores(model, test_texts))
    result: dict[str, Any] = _binary_metrics(y_test, scores)
    result.update(
        threshold=0.5,
        n_train=len(data.train),
        n_test=len(data.test),
        n_train_per_class=data.n_train_per_class,
        n_test_per_class=data.n_test_per_class,
    )
    left_texts = [line for _, line in data.left_out]
    if cfg.baseline:
        base_all = _train_baseline(data.train, test_texts + left_texts, cfg)
        base_scores, base_left = base_all[: len(test_texts)], base_all[len(test_texts) :]
        result.update({f"baseline_{k}": v for k, v in _binary_metrics(y_test, base_scores).items()})
    edges = np.linspace(0.0, 1.0, cfg.hist_bins + 1)
    pos_scores, neg_scores = scores[y_test == 1], scores[y_test == 0]
    result["score_hist"] = {
        "bins": [float(e) for e in edges],
        "positive": [int(c) for c in np.histogram(pos_scores, bins=edges)[0]],
        "negative": [int(c) for c in np.histogram(neg_scores, bins=edges)[0]],
    }
    result["pareto_alpha"] = cfg.pareto_alpha
    result["pareto_expected_keep_rate"] = {
        "positive": _expected_keep_rate(pos_scores, cfg.pareto_alpha),
        "negative": _expected_keep_rate(neg_scores, cfg.pareto_alpha),
    }
    if data.left_out:
        # The left-out reference against the same held-out crawl documents: a classifier that learned a
        # source's formatting ranks an unseen source no better than chance.
        left_scores = np.array(fasttext_scores(model, left_texts))
        left_metrics = _against_crawl(left_scores, neg_scores)
        result["left_out"] = {
            "paths": list(left_out_paths),
            "n": len(left_scores),
            "n_negative": int(len(neg_scores)),
            "roc_auc": left_metrics["roc_auc"],
            "recall": left_metrics["recall"],  # share of the left-out reference scoring >= 0.5
            "mean_score": float(np.mean(left_scores)),
            "pareto_expected_keep_rate": _expected_keep_rate(left_scores, cfg.pareto_alpha),
        }
        if cfg.baseline:
            result["left_out"]["baseline_roc_auc"] = _against_crawl(base_left, base_scores[y_test == 0])["roc_auc"]
    result["folds"] = cfg.folds
    result["fold_models"] = data.fold_files
    return result


def cross_fit_analysis(work: str, model: Any, data: TrainingSample, cfg: QualityTrainConfig) -> dict[str, Any]:
    """``eval.json["cross_fit"]``: each fold model's held-out ROC AUC, and what cross-fitting changes.

    That change is measured on the crawl documents ``model.bin`` trained on: their in-sample scores
    (memorised) against the scores of the fold model that never saw them, which the filter uses. The fold
    models are read from the local folder ``work`` :func:`fit` trained them into.
    """
    fold_models = [load_model(os.path.join(work, f)) for f in data.fold_files]
    per_fold = []
    for fm, (_, counts) in zip(fold_models, data.fold_sets):
        fold_test = np.array(fasttext_scores(fm, data.test_texts))
        per_fold.append({**counts, "roc_auc": _binary_metrics(data.test_labels, fold_test)["roc_auc"]})
    seen = data.train_negatives
    in_sample = np.array(fasttext_scores(model, [line for _, line in seen]))
    out_of_fold = np.zeros(len(seen))
    by_fold: dict[int, list[int]] = {}
    for j, (key, _) in enumerate(seen):
        by_fold.setdefault(fold_of(key, cfg.seed, cfg.folds), []).append(j)
    for k, js in by_fold.items():
        out_of_fold[js] = fasttext_scores(fold_models[k], [seen[j][1] for j in js])
    return {
        "seed": cfg.seed,
        "fold_hash": FOLD_HASH,
        "per_fold": per_fold,
        "train_negatives": {
            "n": len(seen),
            "mean_score_in_sample": float(np.mean(in_sample)),
            "mean_score_out_of_fold": float(np.mean(out_of_fold)),
            "pareto_expected_keep_rate_in_sample": _expected_keep_rate(in_sample, cfg.pareto_alpha),
            "pareto_expected_keep_rate_out_of_fold": _expected_keep_rate(out_of_fold, cfg.pareto_alpha),
        },
    }


# -- write: eval.json, config.json, score_hist.png, stats ----------------------------------------------------


def _model_config(
    cfg: QualityTrainConfig, positives: list[str], left_out: list[str], negatives: list[str], fold_files: list[str]
) -> dict[str, Any]:
    """``config.json``: how the model was trained, and what the filter reads to route documents to fold models."""
    import sklearn

    return {
        "config": dataclasses.asdict(cfg),
        "positives": list(positives),
        "left_out_positives": list(left_out),
        "negatives": list(negatives),
        "labels": {"positive": HQ_LABEL, "negative": CC_LABEL},
        "normalization_version": NORMALIZATION_VERSION,
        "fasttext_threads": cfg.fasttext_threads,
        "sklearn_version": sklearn.__version__,
        "sample_hash": SAMPLE_HASH,  # which documents of each class were drawn (pipeline.quality.sample)
        # what run_quality_filter reads to route each document to the model that never saw it
        "folds": cfg.folds,
        "fold_models": fold_files,
        "fold_seed": cfg.seed,
        "fold_hash": FOLD_HASH,
    }


def _plot_histograms(path: str, edges: list[float], pos: list[int], neg: list[int], title: str) -> None:
    """Held-out score histograms of both classes; uses the Agg canvas directly, never pyplot's global state.
    Rendered in memory, then written through :mod:`pipeline.fs` (``path`` may be on an object store)."""
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
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    fs.write_bytes(path, png.getvalue())


def _summarise(stats: StageStats, data: TrainingSample, result: dict[str, Any], cfg: QualityTrainConfig) -> None:
    """``stats.json``'s figures beside the accounting: what each class held and the headline metrics."""
    stats.extra.update(
        positive=data.counts["positive"],
        negative=data.counts["negative"],
        n_train=result["n_train"],
        n_test=result["n_test"],
        roc_auc=result["roc_auc"],
        folds=cfg.folds,
    )
    if data.left_out:
        stats.extra["left_out"] = {**data.counts["left_out"], "roc_auc": result["left_out"]["roc_auc"]}
    if data.fold_sets:
        stats.extra["fold_models"] = data.fold_files
    if cfg.baseline:
        stats.extra["baseline_roc_auc"] = result["baseline_roc_auc"]


def train_quality(
    positives: list[str],
    negatives: list[str],
    out_dir: str,
    cfg: QualityTrainConfig,
    force: bool = False,
    runner: RunnerConfig | None = None,
) -> dict[str, Any]:
    """Train the quality classifier (reference = positive, crawl = negative) and return its evaluation.

    The training sample is drawn on ``runner`` (default: one in-process worker) by a hash of each document's
    id, so it is the same on any runner and worker count; each class is balanced and split ``test_fraction``
    held out (:func:`sample`); the metrics in
    ``eval.json`` are on that split only. ``out_dir`` may be local or on an object store: fastText trains in
    the system temp folder (it writes only local files) and the models are copied in, and the stage's
    ``stats.json``, written last, commits the folder (:mod:`pipeline.commit`). A rerun with the same inputs,
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
    if not positives or not negatives:
        raise ValueError("train_quality needs at least one positive and one negative input")
    eval_path = fs.join(out_dir, EVAL_FILE)
    # A finished folder that lost its eval.json is not complete: what this function returns is gone.
    stage = Stage(
        "quality_train",
        out_dir,
        [*positives, *negatives],
        {"config": cfg, "positives": len(positives)},
        force or not fs.exists(eval_path),
        module=__name__,
    )
    if stage.complete():
        return fs.read_json(eval_path)
    trained_positives, left_out_paths = split_holdout(positives, list(cfg.holdout_positive))
    stats = StageStats(stage="quality_train")

    def body(out: str) -> StageStats:
        drawn = fs.join(out, "sample")  # written by the sampling pipeline's workers: on the output's storage
        data = sample(trained_positives, negatives, left_out_paths, cfg, stats, runner or SAMPLE_RUNNER, drawn)
        fs.delete_folder(drawn)  # the sample lives on in the models; its text is not an output
        with tempfile.TemporaryDirectory(prefix="ccgpt-quality-") as work:  # fastText reads and writes local files
            fit(work, data, cfg)
            model = load_model(os.path.join(work, MODEL_FILE))
            result = evaluate(model, data, cfg, left_out_paths)
            if data.fold_sets:
                result["cross_fit"] = cross_fit_analysis(work, model, data, cfg)
            check_active_owner()  # the model's fixed name: only while this attempt owns the folder
            for name in (MODEL_FILE, *data.fold_files):
                fs.put_file(os.path.join(work, name), fs.join(out, name))
        fs.write_json(fs.join(out, EVAL_FILE), result)
        model_config = _model_config(cfg, trained_positives, left_out_paths, negatives, data.fold_files)
        fs.write_json(fs.join(out, CONFIG_FILE), model_config)
        _plot_histograms(
            fs.join(out, HIST_FILE),
            result["score_hist"]["bins"],
            result["score_hist"]["positive"],
            result["score_hist"]["negative"],
            f"held-out scores (ROC AUC {result['roc_auc']:.3f})",
        )
        _summarise(stats, data, result, cfg)
        return stats

    stage.run(body)
    return fs.read_json(eval_path)
