"""ccgpt curation: Common Crawl to curated, deduplicated, tokenized and mixed Arrow shards (Apache Beam)."""

__version__ = "0.1.0"
