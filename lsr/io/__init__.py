"""File formats at the edges: BEIR folders, JSONL corpora, TREC runs, JsonVectorCollection, encoded shards.

The index's own format lives in :mod:`lsr.index.format`. Nothing here imports torch.
"""
