"""Sharded search on Ray: shard actors each memory-map a group of an index's segments; a coordinator
scatters a query batch to them and merges their top-k into the exact global top-k.

A shard is a run of consecutive segments of one manifest generation. Segments already number their
documents in the index's global id space (global id = ``doc_base`` + local id), so a shard's hits need no
id mapping, and the merge is the one :class:`~lsr.index.Searcher` does over segments (score descending,
ties by ascending id): the global top-k of the union of the shards' top-k is the global top-k of all
segments, so sharded results equal the single index's bit for bit (ids, scores, order).

A shard actor opens only its own segments (and the tombstones), so on a cluster a node pages in only the
data it serves; the index path must be readable at the same path on every node (shared storage or a
per-node copy of the shard's segments, see ``benchmarks/README.md``). Shard actors restart when killed and
a search they were running is retried.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lsr.distributed._ray import require_ray
from lsr.errors import IndexFormatError, InvalidInputError, InvalidQueryError
from lsr.index import Index, open_index
from lsr.index import format as fmt
from lsr.kernels import check_k, check_queries
from lsr.search.retriever import SparseRetriever
from lsr.types import Hits, SparseBatch

__all__ = ["ShardServer", "ShardedSearcher", "ShardedRetriever", "plan_shards"]

log = logging.getLogger(__name__)


def plan_shards(manifest: fmt.Manifest, shards: int) -> list[list[str]]:
    """Split the segments into at most ``shards`` runs of consecutive segments with similar numbers of
    postings (the work a query does is roughly proportional to them). Never returns an empty shard."""
    if not isinstance(shards, int) or shards < 1:
        raise InvalidInputError(f"shards must be an integer >= 1, got {shards!r}.")
    segments = manifest.segments
    if not segments:
        raise InvalidInputError("the index has no segments to shard.")
    if shards > len(segments):
        log.warning("%d shards asked for but the index has %d segments; using %d", shards, len(segments),
                    len(segments))
        shards = len(segments)
    names = [s.name for s in segments]
    ends = np.cumsum([max(1, s.nnz) for s in segments], dtype=np.float64)
    cuts, start = [], 0
    for i in range(1, shards):
        cut = int(np.searchsorted(ends, ends[-1] * i / shards, side="left")) + 1
        # at least one segment here, and at least one left for each shard after this one
        cut = min(max(cut, start + 1), len(names) - (shards - i))
        cuts.append(cut)
        start = cut
    return [names[a:b] for a, b in zip([0, *cuts], [*cuts, len(names)], strict=True)]


class ShardServer:
    """What a shard actor holds: its segments of one generation, memory-mapped, and their deletions."""

    def __init__(self, index_path: str, generation: int, segment_names: Sequence[str], backend: str = "auto"):
        from lsr.index.reader import Segment
        from lsr.kernels import resolve_backend

        path = Path(index_path)
        manifest = fmt.read_manifest(path)
        if manifest.generation != generation:
            raise IndexFormatError(f"{path} is at generation {manifest.generation}, but this shard was planned "
                                   f"for generation {generation}; plan the shards again.")
        wanted = set(segment_names)
        infos = [info for info in manifest.segments if info.name in wanted]
        if len(infos) != len(wanted):
            raise IndexFormatError(f"{path} generation {generation} lacks segments {sorted(wanted)}.")
        self.segments = [Segment.open(path, info, manifest) for info in infos]
        self.dim = manifest.dim
        self.backend = resolve_backend(backend)
        self._deleted = [_deleted_mask(path, manifest, seg.info) for seg in self.segments]

    def search(self, queries: SparseBatch, k: int, algorithm: str = "auto", alpha: float = 1.0,
               query_cut: int | None = None, query_mass: float = 1.0) -> Hits:
        from lsr.kernels import topk

        parts = [topk(seg.postings, queries, k, deleted, self.backend, id_base=seg.info.doc_base,
                      algorithm=algorithm, alpha=alpha, query_cut=query_cut, query_mass=query_mass,
                      forward=seg.forward)
                 for seg, deleted in zip(self.segments, self._deleted, strict=True)]
        return parts[0] if len(parts) == 1 else Hits.merge(parts, k)

    def describe(self) -> dict[str, Any]:
        import ray

        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(),
                "segments": [s.info.name for s in self.segments],
                "n_docs": sum(s.info.n_docs for s in self.segments)}


def _deleted_mask(path: Path, manifest: fmt.Manifest, info: fmt.SegmentInfo) -> np.ndarray | None:
    """The segment's uint8 deletion mask from the generation's tombstones (as Index.deleted_mask)."""
    record = manifest.tombstones
    if record is None:
        return None
    file = path / record["file"]
    fmt.verify_file(file, record)
    ids = np.load(file, allow_pickle=False)
    lo, hi = np.searchsorted(ids, [info.doc_base, info.doc_base + info.n_docs])
    if lo == hi:
        return None
    mask = np.zeros(info.n_docs, np.uint8)
    mask[ids[lo:hi] - info.doc_base] = 1
    return mask


def _placement(ray: Any, shards: int, strict: bool = False) -> list[Any]:
    """Shard i on node i mod N: Ray's SPREAD is best effort and may stack shards on one node. Soft affinity by
    default, so that a shard whose node is gone restarts elsewhere (but a busy cluster may then also stack
    them); ``strict`` pins each shard to its node (it waits for that node, never moves)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = sorted(n["NodeID"] for n in ray.nodes() if n.get("Alive"))
    if not nodes:
        return ["SPREAD"] * shards
    return [NodeAffinitySchedulingStrategy(nodes[i % len(nodes)], soft=not strict) for i in range(shards)]


class ShardedSearcher:
    """Drop-in for :class:`~lsr.index.Searcher` (same ``search`` signature and results) over shard actors.

    ``shards`` actors are started on the Ray runtime of this process (call ``ray.init`` or use
    :func:`lsr.distributed.ray_session` first), shard i on node i mod N of the cluster's live nodes. They
    stop when this object is closed or garbage-collected. ``num_cpus`` is what each actor reserves: 0 by
    default, so that more shards than cores still start (a reservation the cluster cannot grant would wait
    forever); on a cluster dedicated to serving, reserve the cores a shard's kernels use. ``strict_placement``
    pins shard i to node i mod N instead of preferring it.
    """

    def __init__(self, index: Index, shards: int, backend: str = "auto", num_cpus: float = 0,
                 strict_placement: bool = False):
        ray = require_ray()
        if not ray.is_initialized():
            raise InvalidInputError("sharded search needs a Ray runtime: call ray.init() (or lsr.distributed."
                                    "ray_session) first.")
        self.index = index
        self.plan = plan_shards(index.manifest, shards)
        actor = ray.remote(ShardServer)
        path = str(Path(index.path).resolve())
        nodes = _placement(ray, len(self.plan), strict_placement)
        self.actors = [actor.options(num_cpus=num_cpus, max_restarts=-1, max_task_retries=3, scheduling_strategy=node)
                       .remote(path, index.manifest.generation, names, backend)
                       for names, node in zip(self.plan, nodes, strict=True)]
        self._ray = ray

    @property
    def n_shards(self) -> int:
        return len(self.actors)

    def search(self, queries: SparseBatch, k: int, algorithm: str = "auto", alpha: float = 1.0,
               query_cut: int | None = None, query_mass: float = 1.0) -> Hits:
        k = check_k(k)
        if not isinstance(queries, SparseBatch):
            raise InvalidQueryError(f"queries must be a SparseBatch, got {type(queries).__name__}.")
        if queries.dim != self.index.dim:
            raise InvalidQueryError(
                f"queries have dimension {queries.dim} but the index vocabulary has {self.index.dim} terms.")
        check_queries(queries)
        ref = self._ray.put(queries)  # one copy in the object store, read by every shard
        parts = self._ray.get([a.search.remote(ref, k, algorithm, alpha, query_cut, query_mass) for a in self.actors])
        return parts[0] if len(parts) == 1 else Hits.merge(parts, k)

    def describe(self) -> list[dict[str, Any]]:
        return self._ray.get([a.describe.remote() for a in self.actors])

    def warm_up(self) -> None:
        """Open every shard and compile/load the kernels there before the first real query."""
        one = SparseBatch(np.array([0, 1]), np.array([0]), np.array([1.0], np.float32), self.index.dim)
        for algorithm in ("exhaustive", "auto"):
            self.search(one, 1, algorithm=algorithm)

    def close(self) -> None:
        for actor in self.actors:
            self._ray.kill(actor)
        self.actors = []


class ShardedRetriever(SparseRetriever):
    """A :class:`~lsr.search.SparseRetriever` whose searching is done by shard actors: texts are encoded
    here (the index's own encoder), the top-k is computed on the shards. Usable wherever a ``Retriever`` or
    a ``SparseRetriever`` is (``SearchPipeline(index, sparse=...)``, the service's snapshot)."""

    def __init__(self, index: Index | str | os.PathLike[str], shards: int, encoder: Any = None,
                 backend: str = "auto", num_cpus: float = 0, strict_placement: bool = False):
        index = index if isinstance(index, Index) else open_index(index)
        super().__init__(index, encoder=encoder, backend=backend)
        self.searcher = ShardedSearcher(index, shards, backend, num_cpus, strict_placement)

    def close(self) -> None:
        self.searcher.close()
