"""The recording car and the camera: the bonnet, the void borders, and developing the drawn canvas
into a photo (the reduction of a canvas drawn larger than the frame, which smooths its edges, then
texture, haze, vignetting, exposure, colour cast, sensor noise and lens blur).
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
        cv.paint(win, mask, EGO, reflection * np.float32(0.25) + np.float32(0.03), 0.0)
    top, star = h * (1 - ego.side - ego.mid), h * 0.017
    badge = Batch(cv, 0.0)
    badge.ellipse_px(w / 2, top - star * 0.8, star, star, EGO, (0.45, 0.46, 0.48))
    badge.ellipse_px(w / 2, top - star * 0.8, star * 0.75, star * 0.75, EGO, (0.06, 0.06, 0.07))
    badge.draw()
    _draw_borders(cv, scene)


def _draw_borders(cv: Canvas, scene: Scene) -> None:
    """Rectification wedges at the sides of some frames (the thin out-of-roi frame is drawn on the
    final label map, ``out_of_roi``)."""
    h, w = cv.cam.height, cv.cam.width
    if scene.ego.rectified:
        for reach, flip in ((0.012 * w, False), (0.008 * w, True)):
            win = cv.window(w - reach if flip else 0, 0, w if flip else reach, 0.55 * h)
            xs, ys = cv.coords(win)
            inside = (w - xs if flip else xs) < reach * (1 - ys / (0.55 * h))
            cv.paint(win, inside, RECT_BORDER, (0.01, 0.01, 0.01), 0.0)


def out_of_roi(label: np.ndarray) -> None:
    """Mark the thin frame around the image (0.4 % of its height, at least a pixel) out of roi."""
    b = max(1, round(0.004 * label.shape[0]))
    label[:b], label[-b:], label[:, :b], label[:, -b:] = (OUT_OF_ROI,) * 4


def reduce_labels(label: np.ndarray, factor: int) -> np.ndarray:
    """Label ids (H, W) drawn ``factor`` (1 or 2) times larger, brought to the frame's size: each
    pixel takes the label most of its 2 x 2 drawn pixels have (the top-left one on a tie)."""
    if factor == 1:
        return label
    if factor != 2:
        raise ValueError(f"labels are reduced by 1 or 2, not {factor}")
    a, b, c, d = label[0::2, 0::2], label[0::2, 1::2], label[1::2, 0::2], label[1::2, 1::2]
    return np.where((a == b) | (a == c) | (a == d), a,
                    np.where((b == c) | (b == d), b, np.where(c == d, c, a)))


def _texture_table() -> np.ndarray:
    """How strongly each label's colour varies with the low and the detail noise: (2, 256).

    Stains and patches (low) are strong; fine grain (detail) is weak on smooth surfaces such as
    asphalt, which the camera sees without grain at this distance.
    """
    table = np.zeros((2, 256), np.float32)
    for name, amplitudes in {
            "road": (0.03, 0.008), "sidewalk": (0.05, 0.025), "parking": (0.05, 0.015),
            "ground": (0.06, 0.05), "terrain": (0.1, 0.12), "building": (0.06, 0.02),
            "wall": (0.05, 0.04), "vegetation": (0.04, 0.04), "pole": (0.01, 0.02),
            "car": (0.06, 0.01), "truck": (0.05, 0.02), "bus": (0.05, 0.01),
            "static": (0.04, 0.05), "person": (0.05, 0.05), "rider": (0.05, 0.05),
            "bicycle": (0.02, 0.03), "fence": (0.04, 0.04)}.items():
        table[:, ID[name]] = amplitudes
    return table


_TEXTURE = _texture_table()
_HAZE = {True: np.array([0.58, 0.61, 0.65], np.float32),  # a clear sky's horizon
         False: np.array([0.66, 0.67, 0.68], np.float32)}  # an overcast one
#: Noise is drawn before the lens blur and the reduction to the frame's size, which average it:
#: this gain brings what is left to about ``Light.noise`` grey levels at 2048 pixels wide (less on
#: smaller frames, as on a real frame scaled down).
_NOISE_GAIN = 1.9
#: Veiling glare: light scattered in the lens lifts the darkest parts by a few grey levels.
_FLARE = 5.0


def develop(cv: Canvas, scene: Scene, rng: np.random.Generator, label: np.ndarray) -> np.ndarray:
    """The canvas developed into the frame's (H, W, 3) uint8 photo, given the frame's label ids
    (H, W): the reduction of a canvas drawn larger than the frame (each pixel the average of the
    drawn ones it covers), texture, haze, vignetting, exposure clipping the bright sky, the
    camera's colour cast and contrast, sensor noise and the lens blur.

    All but the reduction work at the frame's size, where they cost a quarter of what they would
    on a canvas drawn twice as large.
    """
    light, f = scene.light, cv.fields
    h, w = label.shape
    factor = cv.cam.width // w
    image, depth = _reduce(cv.image, factor), cv.depth[factor // 2::factor, factor // 2::factor]
    low = f.low[factor // 2::factor, factor // 2::factor]
    detail = f.detail[factor // 2::factor, factor // 2::factor]
    # vignetting, as the product of a fall-off across and one down
    across = 1 - np.float32(0.12) * np.linspace(-1, 1, w, dtype=np.float32) ** 2
    down = (1 - np.float32(0.12) * np.linspace(-1, 1, h, dtype=np.float32) ** 2)[:, None]
    fog = np.exp(depth * np.float32(-1 / light.haze))  # sky and bonnet: depth 0, no haze
    gain = np.take(_TEXTURE[0], label) * low
    gain += np.take(_TEXTURE[1], label) * detail
    gain += 1
    gain *= fog  # what the haze leaves of the surface
    fog *= np.float32(-0.6)
    fog += np.float32(0.6)  # how much haze there is
    gain *= down
    gain *= across
    fog *= down
    fog *= across
    scale = light.tint * (light.exposure * light.contrast * 255)
    haze = _HAZE[light.clear_sky] * scale
    # uniform sensor noise, cheaper to draw than Gaussian and looking the same once blurred; one
    # plane of draws, each channel reading it one pixel further right (so from different draws),
    # plus the contrast pivot, the glare and 0.5 so that the conversion to integers rounds
    spread = light.noise * w / 2048 * _NOISE_GAIN * math.sqrt(12)
    noise = rng.random((h, w + 2), dtype=np.float32)
    noise *= np.float32(spread)
    noise += np.float32(0.45 * (1 - light.contrast) * 255 + _FLARE - spread / 2 + 0.5)
    photo = np.empty((h, w, 3), np.uint8)
    for c in range(3):
        plane = image[c] * gain
        plane *= np.float32(scale[c])
        plane += fog * np.float32(haze[c])
        plane += noise[:, c:c + w]
        np.clip(plane, 0, 255, out=plane)
        photo[..., c] = plane  # truncates: the noise's offset has added the 0.5 that rounds
    return _lens(photo)


def _reduce(image: np.ndarray, factor: int) -> np.ndarray:
    """Colour planes (3, H, W) drawn ``factor`` times larger, averaged over each block."""
    if factor == 1:
        return image
    out = image[:, ::factor, ::factor].copy()
    for dy in range(factor):
        for dx in range(factor):
            if dy or dx:
                out += image[:, dy::factor, dx::factor]
    out *= np.float32(1 / factor**2)
    return out


def _lens(image: np.ndarray) -> np.ndarray:
    """The lens blur: a [5, 22, 5] / 32 filter across and down an (H, W, 3) uint8 image (a
    Gaussian of 0.56 pixels), on integers, which is several times faster than on floats."""
    out = image.astype(np.uint16)
    for axis in (1, 0):
        blurred = out * np.uint16(22)
        side = out * np.uint16(5)
        lead, rest = [slice(None)] * 3, [slice(None)] * 3
        lead[axis], rest[axis] = slice(1, None), slice(None, -1)
        blurred[tuple(lead)] += side[tuple(rest)]
        blurred[tuple(rest)] += side[tuple(lead)]
        for index in (0, -1):  # border pixels stand in for their missing neighbours
            lead[axis] = slice(index, index + 1 or None)
            blurred[tuple(lead)] += side[tuple(lead)]
        blurred += np.uint16(16)  # to round the division by 32
        blurred >>= np.uint16(5)
        out = blurred
    return out.astype(np.uint8)
