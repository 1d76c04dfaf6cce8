"""The approximate faiss index passes the face-index contract, in both tiers.

Small ``flush``/``min_main`` make tiny galleries go through the PQ / HNSW / IVF tier, so the
contract runs against recent (exact) + main (approximate) together, including
tombstoned deletes and a rebuild.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from tests.identity.test_index_contract import (  # the contract, run on this backend too
    DIM,
    ex,
    near,
    test_add_is_idempotent,
    test_empty_and_unknown_tenant,
    test_k_larger_than_gallery,
    test_nearest_first_with_cosine_scores,
    test_protocol,
    test_remove_and_remove_visitor,
    test_same_neighbours_as_exact_search_on_a_larger_gallery,
    test_tenants_are_isolated,
    test_wrong_dimension_is_refused,
    unit,
)

from revisit.backends import open_index
from revisit.config import Settings
from revisit.identity.ann_index import AnnOptions, FaissAnnIndex, parse_options
from revisit.identity.index import FaceIndex, FaissIndex

CONTRACT = (
    test_add_is_idempotent, test_empty_and_unknown_tenant, test_k_larger_than_gallery,
    test_nearest_first_with_cosine_scores, test_protocol, test_remove_and_remove_visitor,
    test_same_neighbours_as_exact_search_on_a_larger_gallery, test_tenants_are_isolated,
    test_wrong_dimension_is_refused,
)


@pytest.fixture(params=["pq", "hnsw", "ivf"])
def index(request: pytest.FixtureRequest) -> Iterator[FaceIndex]:
    yield FaissAnnIndex(DIM, AnnOptions(kind=request.param, flush=4, min_main=4, nlist=8,
                                        nprobe=8, ef_search=64))


def test_options_from_url_and_backend_choice() -> None:
    o = parse_options("faiss://?type=ivf&nlist=64&nprobe=4")
    assert (o.kind, o.nlist, o.nprobe) == ("ivf", 64, 4)
    assert parse_options("faiss://?pq_m=16&rerank=8") == AnnOptions(kind="pq", pq_m=16, rerank=8)
    with pytest.raises(ValueError, match="whole numbers"):
        parse_options("faiss://?rerank=many")
    with pytest.raises(ValueError, match="must divide"):
        FaissAnnIndex(DIM, AnnOptions(pq_m=DIM + 1))
    assert isinstance(open_index(Settings(index_url="faiss://?rerank=4")), FaissAnnIndex)
    with pytest.raises(ValueError, match="unknown option"):
        parse_options("faiss://?type=hnsw&efsearch=3")
    with pytest.raises(ValueError, match="type"):
        parse_options("faiss://?type=lsh")
    assert isinstance(open_index(Settings(index_url="faiss://?type=hnsw")), FaissAnnIndex)
    assert isinstance(open_index(Settings(index_url="faiss://")), FaissIndex)
    assert isinstance(open_index(Settings()), FaissIndex)


def test_main_tier_tombstones_and_rebuild(index: FaissAnnIndex) -> None:
    vecs = [unit(100 + i) for i in range(60)]
    index.add(ex(f"V-{i:06X}", f"F-{i}", v) for i, v in enumerate(vecs))
    t = index._tenants["default"]
    assert t.main is not None and t.main.ntotal >= 56  # flushed out of the exact tier
    index.remove("default", [f"F-{i}" for i in range(10)])
    hits = index.search("default", np.stack([near(vecs[i], 9, 0.05) for i in range(12)]), 3)
    assert all(h[0].face_image_id != f"F-{i}" for i, h in enumerate(hits[:10]))
    assert [h[0].face_image_id for h in hits[10:]] == ["F-10", "F-11"]
    index.remove("default", [f"F-{i}" for i in range(10, 40)])  # > 1/3 dead: rebuilt
    assert not t.dead and index.size("default") == 20
    hits = index.search("default", np.stack([near(vecs[i], 9, 0.05) for i in range(40, 60)]), 1)
    assert [h[0].face_image_id for h in hits] == [f"F-{i}" for i in range(40, 60)]
