"""What the synthetic blur of a training config looks like: the distribution of blur lengths,
averaging spaces and moving layers it draws, and a contact sheet of synthetic crops next to
real blurred crops.

    python benchmarks/synthesis_sheet.py -c configs/train/edgenet_m5_long.yaml

writes ``docs/blur_lengths.png`` (the drawn statistics: no image data) and, unless
``--no-sheet``, ``runs/contact_sheet.jpg``: 12 synthetic crops (top rows) and 12 crops of the real
blurred frames in ``--real`` (bottom rows), at the same 256x256 size. The sheet holds crops of the
data sets, so it stays under runs/ and is never committed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_deblur.config import load_train_config  # noqa: E402
from edge_deblur.data.blur import max_margin, synthesize  # noqa: E402
from edge_deblur.data.datasets import _SharpImages, _scaled_window  # noqa: E402
from edge_deblur.data.pairs import find_pairs  # noqa: E402


def draw(cfg, n: int, seed: int):
    images = _SharpImages(cfg.data.sharp_roots)
    crop = (cfg.data.crop, cfg.data.crop)
    margin = max_margin(cfg.data.blur, crop)
    rng = np.random.default_rng(seed)
    infos, crops = [], []
    for i in range(n):
        img = images.get(int(rng.integers(len(images))))
        win = _scaled_window(img, rng, crop, margin, cfg.data.scale, True)
        blurred, _, info = synthesize(win, rng, cfg.data.blur, crop=crop, return_info=True)
        infos.append(info)
        if len(crops) < 12:
            crops.append((blurred * 255 + 0.5).astype(np.uint8))
    return infos, crops


def real_crops(root: str, size: int, count: int, seed: int):
    pairs = find_pairs(root)
    rng = np.random.default_rng(seed)
    out = []
    for k in rng.choice(len(pairs), size=min(count, len(pairs)), replace=False):
        img = cv2.imread(str(pairs[int(k)][1]))[..., ::-1]
        H, W = img.shape[:2]
        y, x = int(rng.integers(0, max(1, H - size + 1))), int(rng.integers(0, max(1, W - size + 1)))
        c = img[y:y + size, x:x + size]
        out.append(cv2.resize(c, (size, size)) if c.shape[:2] != (size, size) else c)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-c", "--config", required=True)
    ap.add_argument("-n", type=int, default=400, help="samples to draw for the statistics")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plot", default=str(ROOT / "docs" / "blur_lengths.png"))
    ap.add_argument("--real", nargs="*", default=["../shared/data/pairs/GoPro_1280x720", "../shared/data/pairs/REDS_320x180"])
    ap.add_argument("--sheet", default=str(ROOT / "runs" / "contact_sheet.jpg"))
    ap.add_argument("--no-sheet", action="store_true")
    a = ap.parse_args(argv)
    cfg = load_train_config(a.config)
    infos, crops = draw(cfg, a.n, a.seed)
    blurred = [i for i in infos if not i["sharp"]]
    lengths = np.array([i["length"] for i in blurred])
    layers = np.array([i["layer_length"] for i in blurred if "layer_length" in i])
    display = sum(i["space"] == "display" for i in blurred)
    homog = sum(i["mode"] == "homography" for i in blurred)
    print(f"{len(infos)} samples of {a.config}: {len(blurred)} blurred, lengths {lengths.min():.1f}-{lengths.max():.1f} px "
          f"(median {np.median(lengths):.1f}), {homog} homography / {len(blurred) - homog} kernel, "
          f"{display} display-space / {len(blurred) - display} linear-light, {len(layers)} with a moving layer")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ax[0].hist(lengths, bins=24, color="#4477aa")
    ax[0].set_xlabel("camera-shake extent (px at the crop's scale)")
    ax[0].set_ylabel("samples")
    ax[0].set_title(f"{cfg.name}: {len(blurred)} blurred of {len(infos)}")
    if len(layers):
        ax[1].hist(layers, bins=16, color="#ee6677")
    ax[1].set_xlabel("moving layer's own extent (px)")
    ax[1].set_title(f"{len(layers)} with a layer; {display} display-space")
    fig.tight_layout()
    Path(a.plot).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.plot, dpi=80)
    print(f"wrote {a.plot}")
    if a.no_sheet:
        return
    real = []
    for r in a.real:
        real += real_crops(r, cfg.data.crop, 12 // len(a.real), a.seed)
    rows = [np.concatenate(crops[i:i + 6], 1) for i in (0, 6)] + [np.concatenate(real[i:i + 6], 1) for i in (0, 6)]
    sheet = np.concatenate(rows, 0)
    Path(a.sheet).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(a.sheet, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    print(f"wrote {a.sheet} (top: synthetic, bottom: real; not for committing)")


if __name__ == "__main__":
    main()
