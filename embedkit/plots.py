"""Figures as PNG files (matplotlib, headless Agg backend)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .options import PROJECTIONS

__all__ = ["check_figure_path", "confusion_matrix_png", "embedding_map", "heatmap",
           "project_2d"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def check_figure_path(path) -> Path:
    """`path` if matplotlib can write a figure in the format its suffix names, else a
    UsageError that lists the formats (checked before any work, not after it)."""
    from matplotlib.backend_bases import FigureCanvasBase

    from .errors import UsageError

    formats = sorted(FigureCanvasBase.get_supported_filetypes())
    if Path(path).suffix.lower().lstrip(".") not in formats:
        raise UsageError(f"{path}: a figure is written as .png, .svg or .pdf (any of "
                         f"{', '.join(formats)}); give the file one of those suffixes")
    return Path(path)


def _save(fig, path) -> Path:
    """Lay out, write the figure (creating its folder) and free it."""
    path = check_figure_path(path)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return path


def heatmap(matrix, row_labels, col_labels, path, title: str = "", fmt: str = ".2f",
            cmap: str = "viridis", xlabel: str = "", ylabel: str = "") -> Path:
    """A labelled matrix with each value written in its cell (similarity matrices, confusion
    matrices); `xlabel` / `ylabel` name the axes."""
    plt = _pyplot()
    matrix = np.asarray(matrix, dtype=float)
    n_rows, n_cols = matrix.shape
    width = max(1.2 + 0.7 * n_cols, 1.0 + 0.09 * len(title))  # room for the whole title
    fig, ax = plt.subplots(figsize=(width, 1.0 + 0.6 * n_rows))
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
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def confusion_matrix_png(report: dict, path, title: str = "") -> Path:
    """The confusion matrix of a `metrics.classification_report` (rows: true class, columns:
    predicted class, cells: counts)."""
    labels = report["labels"]
    return heatmap(report["confusion_matrix"], labels, labels, path, title=title, fmt=".0f",
                   xlabel="predicted", ylabel="true")


def project_2d(vectors, method: str = "pca", seed: int = 0) -> np.ndarray:
    """[n, d] -> [n, 2] by PCA, t-SNE (perplexity capped for small sets) or UMAP."""
    from .errors import MissingExtra, UsageError

    x = np.asarray(vectors, dtype=np.float64)
    PROJECTIONS.check(method)
    if len(x) < 3:
        raise UsageError(f"a 2-D map needs at least 3 items, got {len(x)}")
    if method == "pca":
        from sklearn.decomposition import PCA

        out = PCA(n_components=min(2, x.shape[1]), random_state=seed).fit_transform(x)
        return out if out.shape[1] == 2 else np.column_stack([out, np.zeros(len(out))])
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, (len(x) - 1) / 3))
        return TSNE(n_components=2, perplexity=perplexity, init="pca",
                    random_state=seed).fit_transform(x)
    try:
        import umap
    except ImportError:
        raise MissingExtra("embedding_map(method='umap')", "umap", "umap-learn") from None
    # umap warns that a seed makes it run on one thread: reproducible maps are the point here
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
        return umap.UMAP(n_components=2, n_neighbors=min(15, len(x) - 1),
                         random_state=seed).fit_transform(x)


def embedding_map(es, path, method: str = "pca", label: str | None = None, seed: int = 0,
                  title: str | None = None) -> Path:
    """A 2-D map of an EmbeddingSet (PCA, t-SNE or UMAP), one colour per label, as PNG."""
    from .errors import UsageError

    plt = _pyplot()
    points = project_2d(es.vectors, method, seed)
    if label is not None and label not in es.label_columns:
        raise UsageError(f"no label column '{label}'; the set has "
                         f"{', '.join(es.label_columns) or 'none'}")
    labels = es.label_columns[label] if label else es.labels
    fig, ax = plt.subplots(figsize=(7, 6))
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=12, alpha=0.8)
    else:
        names = sorted({str(v) for v in labels})
        cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
        text = np.asarray([str(v) for v in labels])
        for i, name in enumerate(names):
            mask = text == name
            ax.scatter(points[mask, 0], points[mask, 1], s=12, alpha=0.8,
                       color=cmap(i % cmap.N), label=name)
        if len(names) <= 30:
            ax.legend(fontsize=7, markerscale=1.5, loc="upper left", bbox_to_anchor=(1.01, 1),
                      frameon=False)
    model = es.meta.get("model") or "vectors"
    ax.set_title(title or f"{model} ({es.meta.get('layer') or 'features'}): "
                          f"{len(es)} items, {method.upper()}")
    ax.set_xticks([])
    ax.set_yticks([])
    return _save(fig, path)
