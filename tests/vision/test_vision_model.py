import logging

import numpy as np
import pytest

from revisit.config import Settings
from revisit.vision import Vision, available, create
from revisit.vision.model import ModelNotAvailable, package_file, resolve_threads


def test_registry_lists_builtin_models():
    assert available("detector") == ["yunet"]
    assert set(available("embedder")) == {"sface-reid", "sface", "reid0095", "arcface"}


def test_unknown_model_names_the_choices():
    with pytest.raises(ValueError, match="sface"):
        create("embedder", "facenet")


def test_models_load_lazily_on_first_predict():
    emb = create("embedder", "sface", threads=1)
    assert not emb.loaded
    out = emb.predict([np.zeros((112, 112, 3), np.uint8)])
    assert emb.loaded
    assert out.shape == (1, 128)


def test_empty_batch_does_not_load():
    emb = create("embedder", "sface", threads=1)
    assert emb.predict([]).shape == (0, 128)
    assert not emb.loaded


def test_default_models_are_commercially_usable():
    v = Vision(Settings())
    assert v.detector.commercial_use_ok and v.embedder.commercial_use_ok
    assert v.detector.name == "yunet" and v.embedder.name == "sface"


def test_arcface_is_flagged_non_commercial(caplog):
    with caplog.at_level(logging.WARNING, logger="revisit.vision.model"):
        emb = create("embedder", "arcface", threads=1)
    assert not emb.commercial_use_ok
    assert "NON-COMMERCIAL" in caplog.text


def test_match_threshold_uses_setting_then_model_default():
    from revisit.vision.embed import SFaceEmbedder

    assert Vision(Settings()).match_threshold == SFaceEmbedder.match_threshold
    assert Vision(Settings(identity={"match_threshold": 0.6})).match_threshold == 0.6


def test_missing_package_is_reported():
    with pytest.raises(ModelNotAvailable, match="not installed"):
        package_file("no_such_package_xyz", "model.onnx")


def test_threads_zero_means_all_cores():
    assert resolve_threads(3) == 3
    assert resolve_threads(0) >= 1
