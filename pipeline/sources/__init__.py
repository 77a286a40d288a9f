"""Named sources beside the crawl (``ccgpt source``): each kind of input -> the same document table.

A training mix is more than the crawl: books, documentation, reference prose, the pages a curated URL list
points at, an encyclopedia dump. Each kind has a module of its own with a config dataclass, a ``run_*`` stage
and a spec dataclass (a run config's ``sources`` entry, parsed when the config loads):

* :mod:`.files`: text / text-file / JSON-lines files (``ccgpt source text|text-file|jsonl``);
* :mod:`.webtext`: crawl pages whose URL is on a curated list, GPT-2's WebText (``ccgpt source webtext``),
  joined on the keys of :mod:`.urls`;
* :mod:`.wikipedia`: a MediaWiki XML dump (``ccgpt source wikipedia``).

:mod:`.common` holds what they share (errors, input resolution, the read-files-to-documents transform, spec
parsing helpers); :mod:`.builders` is the table ``kind -> (spec, run)`` that a run config's sources go through.
This file imports nothing, so importing one kind's module never loads the others.
"""
