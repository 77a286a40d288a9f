"""Per format: the requests a task's examples make, and the metrics their scores give.

The conventions are lm-eval 0.4.13's, so ``ccgpt eval`` and ``lm-eval --model hf`` agree on the same model:

* minimal pairs score ``target_delimiter + sentence`` after the prefix token (lm-eval's BLiMP template: an
  empty context and the two sentences as choices); a pair is right when ``ll(good) >= ll(bad)`` (lm-eval's
  ``argmax`` keeps the first of equal scores);
* multiple choice scores ``target_delimiter + choice`` after the context (its trailing whitespace moved into
  the continuation); ``acc_norm`` divides each choice's log-likelihood by its length in characters;
* rolling perplexity sums a document's disjoint-window log-likelihood; word and byte perplexities divide by
  the counts of the original text (see :mod:`schemas.tasks`). With ``sliding_stride`` the same metrics are
  also reported with GPT-2's sliding window, as ``<metric>_sliding``.

Standard errors: accuracies use the sample standard deviation over examples divided by sqrt(n) (lm-eval's
``mean_stderr``); perplexities and bits per byte, which are ratios of sums over documents, use the delta
method on that ratio (documents as the sampling unit). ``"N/A"`` when there is a single example.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from schemas.tasks import (
    MINIMAL_PAIRS,
    MULTIPLE_CHOICE,
    Document,
    MinimalPair,
    MultipleChoice,
    Subtask,
    TaskSpec,
)
from train.eval.models import ModelSource
from train.eval.scoring import Request, empty_context_request, rolling_requests, split_trailing_space

NA = "N/A"


@dataclass
class TaskRequests:
    """A task's requests, flat, and for each example the slice of them it owns (per scoring variant)."""

    task: TaskSpec
    subtasks: list[Subtask]
    requests: list[Request] = field(default_factory=list)
    spans: list[dict[str, tuple[int, int]]] = field(default_factory=list)  # per example: variant -> [a, b)

    def add(self, variant: str, reqs: list[Request], example: int) -> None:
        while len(self.spans) <= example:
            self.spans.append({})
        self.spans[example][variant] = (len(self.requests), len(self.requests) + len(reqs))
        self.requests.extend(reqs)

    def examples(self) -> list[tuple[str, Any]]:
        return [(s.name, ex) for s in self.subtasks for ex in s.examples]


def build_requests(
    task: TaskSpec, subtasks: list[Subtask], model: ModelSource, sliding_stride: int | None = None
) -> TaskRequests:
    """Tokenise every example (batched) into scoring requests."""
    out = TaskRequests(task, subtasks)
    examples = [ex for _, ex in out.examples()]
    delim = task.target_delimiter
    if task.format == MINIMAL_PAIRS:
        texts = [delim + s for ex in examples for s in (ex.good, ex.bad)]
        ids = model.encode_batch(texts, False)
        for i in range(len(examples)):
            out.add("choices", [empty_context_request(ids[2 * i + k], model.prefix_id) for k in (0, 1)], i)
    elif task.format == MULTIPLE_CHOICE:
        pairs = [split_trailing_space(ex.context, delim + c) for ex in examples for c in ex.choices]
        with_ctx = [i for i, (ctx, _) in enumerate(pairs) if ctx]
        no_ctx = [i for i, (ctx, _) in enumerate(pairs) if not ctx]
        reqs: list[Request | None] = [None] * len(pairs)
        ctx_ids = model.encode_batch([pairs[i][0] for i in with_ctx], True)
        whole_ids = model.encode_batch([pairs[i][0] + pairs[i][1] for i in with_ctx], True)
        for i, c, w in zip(with_ctx, ctx_ids, whole_ids):
            reqs[i] = (c, w[len(c) :])
        for i, cont in zip(no_ctx, model.encode_batch([pairs[i][1] for i in no_ctx], False)):
            reqs[i] = empty_context_request(cont, model.prefix_id)
        k = 0
        for i, ex in enumerate(examples):
            out.add("choices", reqs[k : k + len(ex.choices)], i)  # type: ignore[arg-type]
            k += len(ex.choices)
    else:
        ids = model.encode_batch([ex.text for ex in examples], True)
        for i, toks in enumerate(ids):
            out.add("rolling", rolling_requests(toks, model.prefix_id, model.max_length), i)
            if sliding_stride:
                out.add("sliding", rolling_requests(toks, model.prefix_id, model.max_length, sliding_stride), i)
    return out


# ----------------------------------------------------------------------------------------------- metrics
def _mean_stderr(values: list[float]) -> tuple[float, float | str]:
    arr = np.asarray(values, dtype=np.float64)
    mean = float(arr.mean())
    if len(arr) < 2:
        return mean, NA
    return mean, float(arr.std(ddof=1) / math.sqrt(len(arr)))


def _ratio_stderr(num: np.ndarray, den: np.ndarray) -> tuple[float, float | str]:
    """``sum(num) / sum(den)`` and its delta-method standard error over units."""
    r = float(num.sum() / den.sum())
    n = len(num)
    if n < 2:
        return r, NA
    resid = num - r * den
    return r, float(math.sqrt(n / (n - 1) * float((resid**2).sum())) / float(den.sum()))


def sample_records(reqs: TaskRequests, scores: np.ndarray) -> list[dict[str, Any]]:
    """One record per example: its subtask, index, log-likelihoods and per-example metrics."""
    out = []
    per_subtask: dict[str, int] = {}
    for (name, ex), spans in zip(reqs.examples(), reqs.spans):
        doc_id = per_subtask.get(name, 0)
        per_subtask[name] = doc_id + 1
        rec: dict[str, Any] = {"subtask": name, "doc_id": doc_id}
        if isinstance(ex, MinimalPair | MultipleChoice):
            a, b = spans["choices"]
            lls = scores[a:b].tolist()
            rec["ll"] = lls
            if isinstance(ex, MinimalPair):
                rec["acc"] = int(lls[0] >= lls[1])
            else:
                norm = [ll / len(c) if c else ll for ll, c in zip(lls, ex.choices)]
                rec.update(
                    label=ex.label, acc=int(np.argmax(lls) == ex.label), acc_norm=int(np.argmax(norm) == ex.label)
                )
            if ex.group is not None:
                rec["group"] = ex.group
        else:
            assert isinstance(ex, Document)
            a, b = spans["rolling"]
            rec.update(ll=float(scores[a:b].sum()), words=ex.words, bytes=ex.bytes)
            if "sliding" in spans:
                a, b = spans["sliding"]
                rec["ll_sliding"] = float(scores[a:b].sum())
        out.append(rec)
    return out


def _accuracy_row(records: list[dict[str, Any]], metrics: tuple[str, ...]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for m in metrics:
        value, se = _mean_stderr([r[m] for r in records])
        row[f"{m},none"] = value
        row[f"{m}_stderr,none"] = se
    return row


def _perplexity_row(records: list[dict[str, Any]], metrics: tuple[str, ...]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    words = np.asarray([r["words"] for r in records], dtype=np.float64)
    nbytes = np.asarray([r["bytes"] for r in records], dtype=np.float64)
    for key, suffix in (("ll", ""), ("ll_sliding", "_sliding")):
        if key not in records[0]:
            continue
        nll = -np.asarray([r[key] for r in records], dtype=np.float64)
        for m in metrics:
            if m == "word_perplexity":
                r, se = _ratio_stderr(nll, words)
                value, se = math.exp(r), (se if se == NA else math.exp(r) * se)
            elif m == "byte_perplexity":
                r, se = _ratio_stderr(nll, nbytes)
                value, se = math.exp(r), (se if se == NA else math.exp(r) * se)
            else:  # bits_per_byte
                r, se = _ratio_stderr(nll, nbytes)
                value, se = r / math.log(2), (se if se == NA else se / math.log(2))
            row[f"{m}{suffix},none"] = value
            row[f"{m}{suffix}_stderr,none"] = se
    return row


def metric_row(task: TaskSpec, records: list[dict[str, Any]]) -> dict[str, Any]:
    if task.format in (MINIMAL_PAIRS, MULTIPLE_CHOICE):
        return _accuracy_row(records, task.metrics)
    return _perplexity_row(records, task.metrics)


def higher_is_better(task: TaskSpec, row: dict[str, Any]) -> dict[str, bool]:
    names = [k.split(",")[0] for k in row if "_stderr" not in k]
    return {m: m.startswith("acc") for m in names}
