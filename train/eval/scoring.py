"""Log-likelihood requests and their batched, deterministic scoring (lm-eval 0.4.13's conventions).

A request is ``(context ids, continuation ids)``; its score is the summed log-probability of the
continuation's tokens given everything before them. As in lm-eval's ``HFLM._loglikelihood_tokens``, the
model reads ``(context + continuation)[-(max_length + 1):][:-1]`` (left-truncated to the context window) and
the last ``len(continuation)`` positions are scored, so both tools give the same number for the same request.

Batching: requests are sorted by input length (longest first, ties in request order), cut into batches of
at most ``batch_size`` sequences and ``max_batch_tokens`` padded tokens, right-padded (causal attention never
lets a real position see padding) and scored in float32 as ``logit(target) - logsumexp(logits)`` (the same
number as lm-eval's ``log_softmax`` + gather to float rounding, without writing a vocabulary-wide tensor);
per-token log-probabilities are summed in float64.
The order is a pure function of the requests, so a rerun on the same device gives the same bits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

Request = tuple[list[int], list[int]]


class ScoringError(ValueError):
    """A request the model cannot score (a continuation longer than its context window)."""


def empty_context_request(continuation: list[int], prefix_id: int) -> Request:
    """lm-eval's empty context: condition on the prefix token, unless the continuation already starts with it."""
    if not continuation:
        raise ScoringError("an empty continuation has no log-likelihood")
    if continuation[0] != prefix_id:
        return [prefix_id], continuation
    return continuation[:1], continuation[1:]


def split_trailing_space(context: str, continuation: str) -> tuple[str, str]:
    """lm-eval's ``_encode_pair``: a context's trailing whitespace moves to the continuation."""
    n = len(context) - len(context.rstrip())
    if n:
        return context[:-n], context[-n:] + continuation
    return context, continuation


def rolling_requests(tokens: list[int], prefix_id: int, max_length: int, stride: int | None = None) -> list[Request]:
    """A document's windows: every token is scored once, each window seeing at most ``max_length`` tokens.

    ``stride=None`` (or ``max_length``) is lm-eval's ``loglikelihood_rolling``: disjoint windows of
    ``max_length`` predicted tokens, the first conditioned on the prefix token, the others on the single token
    before them, the last one on a full window of earlier tokens. A smaller ``stride`` is GPT-2's sliding
    window: after the first window, each window predicts ``stride`` new tokens with up to
    ``max_length - stride`` tokens of context before them.
    """
    stride = max_length if stride is None else stride
    if not 1 <= stride <= max_length:
        raise ScoringError(f"stride must be in [1, {max_length}], got {stride}")
    seq = [prefix_id, *tokens]  # seq[i] conditions tokens[i]
    out: list[Request] = []
    start, n = 0, len(tokens)
    while start < n:
        end = min(n, max_length if start == 0 else start + stride)
        lo = max(0, end - max_length)  # the model reads seq[lo:end] and scores its last end - start positions
        out.append((seq[lo : start + 1], tokens[start:end]))
        start = end
    return out


@torch.inference_mode()
def score_requests(
    forward: Callable[[torch.Tensor], torch.Tensor],
    requests: Sequence[Request],
    max_length: int,
    device: torch.device,
    batch_size: int = 64,
    max_batch_tokens: int = 16384,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Summed continuation log-probabilities of ``requests`` (float64, in request order)."""
    inputs: list[list[int]] = []
    conts: list[list[int]] = []
    for i, (ctx, cont) in enumerate(requests):
        if not cont:
            raise ScoringError(f"request {i} has an empty continuation")
        if len(cont) > max_length:
            raise ScoringError(f"request {i}: a continuation of {len(cont)} tokens exceeds the window of {max_length}")
        whole = (list(ctx) + list(cont))[-(max_length + 1) :]
        inputs.append(whole[:-1])
        conts.append(list(cont))
    order = sorted(range(len(inputs)), key=lambda i: (-len(inputs[i]), i))
    out = np.zeros(len(inputs), dtype=np.float64)
    pos = 0
    while pos < len(order):
        width = len(inputs[order[pos]])
        take = max(1, min(batch_size, max_batch_tokens // max(1, width)))
        batch = order[pos : pos + take]
        pos += len(batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        rows, cols, targets, owner = [], [], [], []
        for b, i in enumerate(batch):
            inp, cont = inputs[i], conts[i]
            ids[b, : len(inp)] = torch.tensor(inp, dtype=torch.long)
            first = len(inp) - len(cont)  # logits at inp positions first .. len-1 predict the continuation
            rows.extend([b] * len(cont))
            cols.extend(range(first, len(inp)))
            targets.extend(cont)
            owner.extend([b] * len(cont))
        logits = forward(ids.to(device))
        # log p(target) = logit(target) - logsumexp(logits): one read of the logits, no vocabulary-wide copy
        lse = torch.logsumexp(logits, dim=-1)
        r, c = torch.tensor(rows, device=device), torch.tensor(cols, device=device)
        picked = logits[r, c, torch.tensor(targets, device=device)]
        tok = (picked.double() - lse[r, c].double()).cpu().numpy()
        sums = np.zeros(len(batch), dtype=np.float64)
        np.add.at(sums, np.asarray(owner), tok)
        out[np.asarray(batch)] = sums
        if progress is not None:
            progress(len(batch))
    return out
