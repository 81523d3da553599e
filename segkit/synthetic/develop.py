"""The recording car and the camera: the bonnet, the void borders, and developing the drawn canvas
into a photo (texture, haze, vignetting, colour grading, blur and sensor noise).
"""

from __future__ import annotations

import math

import numpy as np

from segkit.synthetic.camera import Batch, Canvas
from segkit.synthetic.palette import EGO, ID, OUT_OF_ROI, RECT_BORDER
from segkit.synthetic.scene import Scene


def draw_ego(cv: Canvas, scene: Scene) -> None:
    """The bonnet at the bottom (reflecting the street), its star, and the void borders."""
    cam, ego = cv.cam, scene.ego
    w, h = cam.width, cam.height
    u = (np.arange(w, dtype=np.float32) + 0.5) / w * 2 - 1
    edge = h * (1 - ego.side - ego.mid * (1 - u**2))  # (W,) top of the bonnet per column
    win = cv.window(0, float(edge.min()), w, h)
    if win is not None:
        ys = cv.coords(win)[1]
        mask = ys > edge[None, :]
        mirror = np.clip((2 * edge[None, :] - ys).astype(np.intp), 0, h - 1)  # reflected rows
        reflection = np.take(cv.image.reshape(3, -1), mirror * w + np.arange(w), axis=1)
        cv.paint(win, mask, EGO, reflection * np.float32(0.3) + np.float32(0.06), 0.0)
    top, star = h * (1 - ego.side - ego.mid), h * 0.017
    badge = Batch(cv, 0.0)
    badge.ellipse_px(w / 2, top - star * 0.8, star, star, EGO, (0.55, 0.56, 0.58))
    badge.ellipse_px(w / 2, top - star * 0.8, star * 0.75, star * 0.75, EGO, (0.12, 0.12, 0.13))
    badge.draw()
    _draw_borders(cv, scene)


def _draw_borders(cv: Canvas, scene: Scene) -> None:
    """Rectification wedges at the sides (some frames) and the thin out-of-roi frame."""
    h, w = cv.cam.height, cv.cam.width
    if scene.ego.rectified:
        for reach, flip in ((0.012 * w, False), (0.008 * w, True)):
            win = cv.window(w - reach if flip else 0, 0, w if flip else reach, 0.55 * h)
            xs, ys = cv.coords(win)
            inside = (w - xs if flip else xs) < reach * (1 - ys / (0.55 * h))
            cv.paint(win, inside, RECT_BORDER, (0.02, 0.02, 0.02), 0.0)
    b = max(1, round(0.004 * h))
    cv.label[:b], cv.label[-b:], cv.label[:, :b], cv.label[:, -b:] = (OUT_OF_ROI,) * 4


def _texture_table() -> np.ndarray:
    """How strongly each label's colour varies with the low and the detail noise: (2, 256)."""
    table = np.zeros((2, 256), np.float32)
    for name, amplitudes in {
            "road": (0.035, 0.045), "sidewalk": (0.03, 0.06), "parking": (0.04, 0.05),
            "ground": (0.06, 0.08), "terrain": (0.1, 0.16), "building": (0.02, 0.025),
            "wall": (0.03, 0.05), "vegetation": (0.05, 0.12), "pole": (0.01, 0.03),
            "car": (0.01, 0.02), "static": (0.03, 0.05), "person": (0.02, 0.05)}.items():
        table[:, ID[name]] = amplitudes
    return table


_TEXTURE = _texture_table()
_HAZE = np.array([0.78, 0.8, 0.82], np.float32)


def develop(cv: Canvas, scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """Texture, haze, vignetting, colour grading, sensor noise and blur: the final uint8 photo."""
    light, f, label = scene.light, cv.fields, cv.label
    h, w = label.shape
    u, v = np.linspace(-1, 1, w, dtype=np.float32), np.linspace(-1, 1, h, dtype=np.float32)
    exposure = 1 - np.float32(0.125) * (u[None, :] ** 2 + v[:, None] ** 2)
    exposure *= np.float32(light.exposure)
    fog = 1 - np.exp(cv.depth * np.float32(-1 / light.haze))  # sky and bonnet: depth 0
    fog *= np.float32(0.75)
    gain = np.take(_TEXTURE[0], label) * f.low
    gain += np.take(_TEXTURE[1], label) * f.detail
    gain += 1
    gain *= (1 - fog) * exposure
    fog *= exposure
    # grading: white balance, then saturation (mixing in the grey), then contrast, to 0..255
    tint, sat = light.tint.astype(np.float32), np.float32(light.saturation)
    scale = np.float32(light.contrast * 255)
    haze = _HAZE * tint
    haze = (haze * sat + haze.sum() * (1 - sat) / 3) * scale
    grey = (cv.image[0] * tint[0] + cv.image[1] * tint[1] + cv.image[2] * tint[2]) * gain
    grey *= (1 - sat) * scale / 3
    image = cv.image * gain
    for c in range(3):
        image[c] *= tint[c] * sat * scale
        image[c] += grey + fog * haze[c]
    image = _blur(image, light.blur * w / 2048)
    # uniform sensor noise, cheaper to draw than Gaussian and looking the same; one plane of
    # draws, each channel reading it one pixel further right (so from different draws), plus
    # the contrast pivot and 0.5 so that the conversion to integers rounds
    spread = light.noise * math.sqrt(12)
    noise = rng.random((h, w + 2), dtype=np.float32)
    noise *= np.float32(spread)
    noise += np.float32(0.45 * (1 - light.contrast) * 255 - spread / 2 + 0.5)
    for c in range(3):
        image[c] += noise[:, c:c + w]
    np.clip(image, 0, 255, out=image)
    return np.stack([plane.astype(np.uint8) for plane in image], axis=-1)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """A slight lens blur of about ``sigma`` pixels on (3, H, W) planes (3-tap, separable)."""
    if sigma < 0.35:  # the neighbours would weigh under 2 %
        return image
    side = math.exp(-0.5 / sigma**2)
    centre, side = np.float32(1 / (1 + 2 * side)), np.float32(side / (1 + 2 * side))
    for axis in (1, 2):
        neighbour = image * side
        out = image * centre
        lead, rest = [slice(None)] * 3, [slice(None)] * 3
        lead[axis], rest[axis] = slice(1, None), slice(None, -1)
        out[tuple(lead)] += neighbour[tuple(rest)]
        out[tuple(rest)] += neighbour[tuple(lead)]
        for index in (0, -1):  # border pixels stand in for their missing neighbours
            lead[axis] = slice(index, index + 1 or None)
            out[tuple(lead)] += neighbour[tuple(lead)]
        image = out
    return image
