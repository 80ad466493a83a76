"""A labelled PNG grid of synthderm images (the README figure)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def save_grid(images: np.ndarray, meta: pd.DataFrame, path: Path, cols: int = 8) -> None:
    """Each tile titled with its label and A/B/C/D values; bias features listed underneath."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = -(-len(images) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.45, rows * 1.9), squeeze=False, layout="constrained")
    for ax, img, (_, m) in zip(axes.flat, images, meta.iterrows()):
        ax.imshow(img)
        bias = [b for b, on in (("patch", m["patch"]), ("hair", m["hair"] > 0), ("ruler", m["ruler"]),
                                ("vignette", m["vignette"] > 0)) if on]
        ax.set_title(f"{m['label']}{'*' if m['label_noisy'] else ''}\nA{m['asymmetry']:.1f} B{m['border']:.1f} "
                     f"C{m['colors']} D:{m['structure'][:3]}{m['irregularity']:.1f}", fontsize=6.5)
        ax.set_xlabel(" ".join(bias), fontsize=6)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes.flat[len(images):]:
        ax.axis("off")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
