"""Each camera's empty scene: the per-pixel median of frames sampled minutes apart.

People move, so the median of frames taken minutes apart shows the room without them; it
is the background heatmaps are drawn on. No frame is kept: a camera holds up to ``keep``
small samples in memory (as JPEG, a tenth of their pixels' size), and what is stored is
the median, with every face the detector still finds in it (someone who did not move, a
poster) blurred beyond recognition.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import cv2
import numpy as np

from revisit.records import Scene

SCENE_WIDTH = 480  # px: a background is a picture of the room, not a record of it


@dataclass
class _Samples:
    images: list[bytes] = field(default_factory=list)  # JPEG
    shape: tuple[int, ...] = ()
    last: datetime | None = None
    emitted: datetime | None = None


class SceneKeeper:
    """Samples every camera's frames and, now and then, emits its median as a Scene.

    ``faces`` finds face boxes in an image (the detector), so faces left in a median can
    be blurred before it leaves the process.
    """

    def __init__(self, faces: Callable[[np.ndarray], list[tuple[int, int, int, int]]],
                 every: timedelta = timedelta(minutes=1), keep: int = 15,
                 min_frames: int = 5, refresh: timedelta = timedelta(minutes=30)) -> None:
        self.faces = faces
        self.every, self.keep, self.min_frames, self.refresh = every, keep, min_frames, refresh
        self._cams: dict[tuple[str, str], _Samples] = {}

    def observe(self, tenant: str, camera_id: str, ts: datetime,
                pixels: np.ndarray) -> Scene | None:
        """Take ``pixels`` as a sample if the camera's last one is ``every`` old; return a
        new Scene when enough samples are in and the last one is ``refresh`` old."""
        s = self._cams.setdefault((tenant, camera_id), _Samples())
        if s.last is not None and abs(ts - s.last) < self.every:
            return None
        h, w = pixels.shape[:2]
        scale = min(1.0, SCENE_WIDTH / w)
        small = cv2.resize(pixels, (max(1, round(w * scale)), max(1, round(h * scale))),
                           interpolation=cv2.INTER_LINEAR)  # a backdrop: speed over finesse
        if s.shape != small.shape:  # the camera changed resolution
            s.images.clear()
            s.shape = small.shape
        ok, sample = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            return None
        s.images = [*s.images, sample.tobytes()][-self.keep:]
        s.last = ts
        if len(s.images) < self.min_frames or (
                s.emitted is not None and ts - s.emitted < self.refresh):
            return None
        s.emitted = ts
        decoded = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR) for b in s.images]
        median = pixel_median(decoded)
        self._blur_faces(median, scale)
        ok, jpeg = cv2.imencode(".jpg", median, [cv2.IMWRITE_JPEG_QUALITY, 85])
        if not ok:
            return None
        return Scene(tenant, camera_id, w, h, jpeg.tobytes(), len(s.images), ts)

    def _blur_faces(self, image: np.ndarray, scale: float) -> None:
        """Faces the median kept (someone still, a poster): blurred in place. They are
        looked for at the camera's size, where the detector sees them best."""
        big = cv2.resize(image, None, fx=1 / scale, fy=1 / scale) if scale < 1 else image
        for x, y, w, h in self.faces(big):
            x0, y0 = max(0, int((x - w * 0.2) * scale)), max(0, int((y - h * 0.2) * scale))
            x1 = min(image.shape[1], int((x + w * 1.2) * scale) + 1)
            y1 = min(image.shape[0], int((y + h * 1.2) * scale) + 1)
            if x1 - x0 < 2 or y1 - y0 < 2:
                continue
            # 3 x 3 cells: colours of the region, nothing of a face
            cells = cv2.resize(image[y0:y1, x0:x1], (3, 3), interpolation=cv2.INTER_AREA)
            image[y0:y1, x0:x1] = cv2.resize(cells, (x1 - x0, y1 - y0),
                                             interpolation=cv2.INTER_LINEAR)


def pixel_median(images: list[np.ndarray]) -> np.ndarray:
    """Per-pixel median of same-shaped uint8 images (``np.median``'s result, the mean of the
    two middle values rounded down for an even count), sorted in place by an odd-even
    transposition network of element-wise min/max: for the few samples a scene keeps, far
    cheaper than ``np.median`` over the stacked axis."""
    p, n = images, len(images)
    for rnd in range(n):
        for i in range(rnd % 2, n - 1, 2):
            low = np.minimum(p[i], p[i + 1])
            np.maximum(p[i], p[i + 1], out=p[i + 1])
            p[i] = low
    if n % 2:
        return p[n // 2]
    return ((p[n // 2 - 1].astype(np.uint16) + p[n // 2]) // 2).astype(np.uint8)
