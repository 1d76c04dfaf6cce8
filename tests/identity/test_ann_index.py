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
from revisit.config.index_url import AnnOptions, parse_options
from revisit.identity.ann_index import FaissAnnIndex
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
                                        nprobe=8, ef_search=64, pq_m=16))


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


def test_a_visitor_seen_minutes_ago_settles_the_search() -> None:
    idx = FaissAnnIndex(DIM, AnnOptions(kind="pq", flush=1000, min_main=4, pq_m=16))
    face, other = unit(7), unit(8)
    # the gallery (main tier): A from an earlier visit, B a closer look-alike of A, and D
    idx.add([ex("V-00000A", "A-old", near(face, 1, 0.6)), ex("V-00000B", "B-old", near(face, 2, 0.05)),
             ex("V-00000D", "D-old", near(other, 9, 0.05))]
            + [ex(f"V-1{i:05X}", f"X-{i}", unit(200 + i)) for i in range(8)])
    idx._flush(idx._tenants["default"])
    # minutes ago: A again (recent tier), and C, a visitor created just now who looks a
    # little like D
    idx.add([ex("V-00000A", "A-new", near(face, 3, 0.3)), ex("V-00000C", "C-new", near(other, 4, 2.0))])
    q = np.stack([near(face, 5, 0.3), near(other, 6, 0.05)])
    full = idx.search("default", q, 3)
    assert full[0][0].face_image_id == "B-old"  # exact answer: the look-alike scores best
    assert full[1][0].face_image_id == "D-old"
    recent_c = next(h.score for h in full[1] if h.face_image_id == "C-new")
    settled = idx.search("default", q, 3, enough=0.5)
    # A's fresh exemplar scored >= enough: the gallery was not searched for that row
    assert settled[0][0].face_image_id == "A-new"
    assert not {h.face_image_id for h in settled[0]} & {"A-old", "B-old"}
    # the second row's best recent exemplar (C) is below the bar: the gallery is searched
    assert recent_c < 0.5
    assert [h.face_image_id for h in settled[1]] == [h.face_image_id for h in full[1]]
    # with a bar C passes, C settles its row even though C is minutes old
    low = idx.search("default", q, 3, enough=recent_c - 0.01)
    assert low[1][0].face_image_id == "C-new" and "D-old" not in {h.face_image_id for h in low[1]}
    # a bar nobody reaches changes nothing
    assert idx.search("default", q, 3, enough=1.1) == full
