"""Photo-sized JPEG files for throughput measurements.

28x28 silhouettes hide the decode cost, which at 500x375 is a large part of a CPU extraction and
all of what keeps a GPU waiting.  These come from scikit-image's bundled sample photos: a random
4:3 crop (a quarter to all of the photo), a random flip, per-channel colour gains and a brightness
shift, resized to 500x375 and saved at JPEG quality 85-95, so no two files are alike.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SOURCES = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
           "immunohistochemistry", "colorwheel", "retina")
SIZE = (500, 375)


def make_photos(folder, n: int, seed: int = 0, start: int = 0) -> Path:
    """Write `n` JPEG files `photo-<k>.jpg` (k from `start`) into `folder`; returns the folder."""
    from PIL import Image
    from skimage import data

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + start)
    sources = [np.asarray(getattr(data, name)())[..., :3] for name in SOURCES]
    for k in range(start, start + n):
        src = sources[k % len(sources)]
        h, w = src.shape[:2]
        ch = int(min(h, w * 3 / 4) * rng.uniform(0.5, 1.0))
        cw = int(ch * 4 / 3)
        top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = src[top:top + ch, left:left + cw].astype(np.float32)
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        crop = crop * rng.uniform(0.8, 1.2, size=3) + rng.uniform(-20, 20)
        im = Image.fromarray(np.clip(crop, 0, 255).astype(np.uint8)).resize(SIZE, Image.BICUBIC)
        im.save(folder / f"photo-{k:05d}.jpg", quality=int(rng.integers(85, 96)))
    return folder
