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
    for name, (lo, hi) in _BOUNDS.items():
        value = getattr(opts, name)
        if not lo <= value <= hi:  # faiss fails (nprobe=0) or hangs only once main is built
            raise ValueError(f"index_url {url!r}: {name}={value} is outside {lo}..{hi}")
    return opts


# What faiss accepts and what stays practical: faiss refuses nprobe 0 (and HNSW m or
# efSearch 0) only when the main tier is first searched, 20k exemplars into a run.
_BOUNDS = {"m": (2, 256), "ef_construction": (1, 100_000), "ef_search": (1, 100_000),
           "nlist": (0, 1 << 20), "nprobe": (1, 1 << 20), "pq_m": (1, 1024),
           "rerank": (1, 1000), "flush": (1, 10_000_000), "min_main": (0, 100_000_000)}
