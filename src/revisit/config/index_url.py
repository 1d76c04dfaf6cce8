"""The approximate face index's options, read from ``identity.index_url`` (e.g.
``faiss://?type=pq&pq_m=64&rerank=16``): parsed here so that a wrong option fails when the
settings load, and used by :class:`revisit.identity.ann_index.FaissAnnIndex`.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlparse


@dataclass(frozen=True, slots=True)
class AnnOptions:
    kind: str = "pq"  # pq | hnsw | ivf
    m: int = 32  # HNSW links per node
    ef_construction: int = 64
    ef_search: int = 256
    nlist: int = 0  # IVF lists; 0 = 4 * sqrt(n) at build
    nprobe: int = 32
    pq_m: int = 64  # PQ sub-quantisers (4 bits each): bytes per face = pq_m / 2
    rerank: int = 16  # PQ candidates re-scored exactly per neighbour asked for
    flush: int = 20_000  # recent exemplars kept exact before they move into main
    min_main: int = 20_000  # below this everything stays exact (flat is fast enough)


def parse_options(url: str) -> AnnOptions:
    """``faiss://?type=pq&pq_m=64&rerank=16&flush=20000``,
    ``faiss://?type=hnsw&m=32&ef_search=256&ef_construction=64`` or
    ``faiss://?type=ivf&nlist=4096&nprobe=32``. Unknown keys are an error."""
    q = {k: v[-1] for k, v in parse_qs(urlparse(url).query).items()}
    kind = q.pop("type", "pq")
    if kind not in {"pq", "hnsw", "ivf"}:
        raise ValueError(f"index_url {url!r}: type must be pq, hnsw or ivf (or leave it out: exact)")
    fields = {f for f in AnnOptions.__dataclass_fields__ if f != "kind"}
    unknown = set(q) - fields
    if unknown:
        raise ValueError(f"index_url {url!r}: unknown option(s) {', '.join(sorted(unknown))}")
    try:
        opts = AnnOptions(kind=kind, **{k: int(v) for k, v in q.items()})
    except ValueError as e:
        raise ValueError(f"index_url {url!r}: options must be whole numbers ({e})") from None
    if opts.pq_m < 1 or opts.rerank < 1:
        raise ValueError(f"index_url {url!r}: pq_m and rerank must be at least 1")
    return opts
