"""Mix sources by weight into packed, globally shuffled Arrow token shards (the GPT-3 Table 2.2 step).

GPT-3 does not train on its sources in proportion to their size: it samples them by a chosen weight, so small
high-quality sources (Wikipedia, books) are repeated for several epochs and the crawl is seen less than once.
This stage does the same, deterministically, on a Beam runner:

1. read the document tables; documents whose ``source`` has no weight are dropped (``source_not_in_mix``);
2. tokenize in batches inside a DoFn (tokenizer loaded once per worker) and end every document with
   ``<|endoftext|>``; a literal ``<|endoftext|>`` in the text stays text (:mod:`pipeline.mix.encode`);
3. per source, hold out a validation set of whole documents: those first in the order of a hash of
   (source, document id) -- ``val_fraction`` of the documents, at most ``val_max_tokens`` tokens, at least one
   full row, never the last training document. The choice depends on the document ids only (not the seed, not
   the weights), so the same documents stay held out across mixes; they are never drawn, repeated or packed
   into a training row;
4. count the training tokens available per source and check the plan: a weight that would need more than
   ``max_epochs`` passes over a source is an error before any row is packed;
5. per source, draw ``weight * budget`` tokens: whole epochs by repetition, plus a seeded hash-ordered subset of
   documents for the fractional epoch (also how a source is downsampled). Steps 3-5 see only (id, token count)
   records, never the tokens, and no worker holds a source's list of them: each choice is a prefix of a hash
   order found from a histogram and one bin's documents (:mod:`pipeline.mix.draw`);
6. pack each source in hash buckets of about ``pack_bucket_documents`` documents, each bucket on its own
   worker: its stream (each epoch in its own seeded order) is cut into rows of ``seq_len + 1`` tokens with
   ``doc_offsets``, and the source's ``round(target / row)`` rows are shared among its buckets by what each can
   fill; each bucket's final partial row is dropped and its tokens counted (``tail_tokens_dropped``) rather
   than padded, so every token a trainer sees is real text and no pad token or loss mask is needed. To fill
   the target despite those tails, a repeated source selects one row per bucket more than its target; a
   downsampled one never selects more than it holds (:mod:`pipeline.mix.pack`);
7. place every row by a seeded hash of (source, row index): the hash's range picks the shard (shards hold
   ``rows_per_shard`` rows on average) and its value the place in it; write ``shard-00000.arrow`` ... (Arrow
   IPC files); the validation rows go, ordered by source, into ``val-00000.arrow`` ...; then ``manifest.json``
   (the validation split listed apart, with its own checksums) and ``mix_table.md`` (:mod:`pipeline.mix.table`).

The recipe reads top to bottom in :class:`pipeline.mix.stage.Mix`; :func:`run_mix` runs it as a stage.
Before the pipeline starts, the ``source`` column alone (cheap: no text is read) is counted per source, so a
weighted source that is absent or has no documents, one too small to hold out validation documents, or a
weight whose share of a fixed budget is less than one row is a :class:`MixError` before any work.

``total_tokens = 0`` means: the largest budget that repeats no source, ``min(available_s / weight_s)``, so the
scarcest source (relative to its weight) is used exactly once and the rest are downsampled. Available tokens
are the training pool: validation documents are never counted in it.

Accounting counts input documents: ``kept`` are those with at least one token in a training or validation
shard (``validation_documents`` in the stats counts the latter); drops are ``source_not_in_mix``,
``empty_text``, ``missing_field``, ``encode_error``, ``duplicate_id`` (the same id twice in one source; the
copy with the smallest token digest is kept), ``not_drawn`` (downsampled away), ``packing_tail`` (drawn, but
only into the dropped end of its bucket's stream) and ``val_packing_tail`` (held out, but only in the dropped
final validation row of its bucket).
"""

from pipeline.lazy import exports

# imported on first use, so importing the package imports none of its modules (pipeline/lazy.py says why)
_EXPORTS = {
    "Mix": "pipeline.mix.stage",
    "MixConfig": "pipeline.mix.config",
    "MixError": "pipeline.mix.config",
    "run_mix": "pipeline.mix.stage",
}
__all__ = sorted(_EXPORTS)
__getattr__ = exports(__name__, _EXPORTS)
