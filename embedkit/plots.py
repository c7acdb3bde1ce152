"""Figures as PNG files (matplotlib, headless Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def heatmap(matrix, row_labels, col_labels, path, title: str = "", fmt: str = ".2f",
            cmap: str = "viridis") -> Path:
    """A labelled matrix with each value written in its cell (similarity matrices, confusion
    matrices)."""
    plt = _pyplot()
    matrix = np.asarray(matrix, dtype=float)
    n_rows, n_cols = matrix.shape
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * n_cols, 1.0 + 0.6 * n_rows))
    im = ax.imshow(matrix, cmap=cmap)
    ax.set_xticks(range(n_cols), [str(c) for c in col_labels], rotation=45, ha="right")
    ax.set_yticks(range(n_rows), [str(r) for r in row_labels])
    finite = matrix[np.isfinite(matrix)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0
    for i in range(n_rows):
        for j in range(n_cols):
            ax.text(j, i, format(matrix[i, j], fmt), ha="center", va="center", fontsize=8,
                    color="white" if matrix[i, j] < middle else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
