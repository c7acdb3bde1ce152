"""The study as one self-contained HTML page: `render(study_dict) -> str`.

Why this shape: the page must open from a file, offline, years later, on a machine without
embedkit. So it holds everything itself: figures are plain inline SVG drawn here (no charting
library, no CDN), thumbnails are base64 PNG data URIs (small: `THUMB_PX` on the long side), and
about thirty lines of vanilla JavaScript add the only thing SVG cannot do alone, the hover card
with an item's thumbnail on the embedding map (each point also carries an SVG <title>, so the
label shows without JavaScript, and every figure's numbers are in a table beside it).

Honesty rules of the page: every number it prints comes from the study dict (`study.json`),
formatted by `number`; each figure's caption states the data and settings behind it; the
warnings sit right under the verdict. Colour: sequential values use viridis (perceptually
uniform, readable in the common colour-vision deficiencies and in greyscale; van der Walt and
Smith, 2015); classes on the map use the Okabe-Ito palette (Okabe and Ito, "Color Universal
Design", 2002), falling back to viridis samples beyond its eight colours, and misclassified
points get a ring, so no distinction rests on hue alone.

A study page is something people send to each other, so it escapes everything it did not write
itself: every name, id, label and message from the data goes through `esc` (HTML text and
attribute values, SVG titles included) or `_script_json` (the JSON the hover card reads), and
every table through `_table`, which escapes each cell unless the page built it as `Html`.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import math

from .ranking import over_budget

__all__ = ["OKABE_ITO", "THUMB_PX", "number", "render", "thumbnail"]

#: Long side of an inlined thumbnail, in pixels.
THUMB_PX = 48
#: Okabe & Ito's colour-blind-safe qualitative palette.
OKABE_ITO = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7",
             "#000000"]


class Html(str):
    """A fragment the page wrote itself (its own markup around escaped data): `esc` keeps it as
    it is, so it can stand in a table cell as markup. Nothing from the data is ever wrapped in
    it unescaped."""


def esc(value) -> str:
    """The page's one escaping for HTML text and quoted attribute values: &, <, >, " and '
    become entities, so a name from the data (a class folder called `<!--`, an id with an
    `onclick`) is shown as text and never parsed as markup. An `Html` fragment passes as it
    is. (JSON inside a <script> is escaped by `_script_json`.)"""
    if isinstance(value, Html):
        return value
    return html.escape(str(value), quote=True)


def _code(text) -> Html:
    """A command, escaped, in <code>."""
    return Html(f"<code>{esc(text)}</code>")


def number(value, digits: int = 3) -> str:
    """How the page writes a number: integers as they are, others with `digits` decimals,
    a missing value as 'n/a'."""
    if value is None:
        return "n/a"
    if isinstance(value, bool) or isinstance(value, int):
        return str(int(value))
    return f"{value:.{digits}f}"


def _viridis(t: float) -> str:
    """Hex colour of viridis at t in [0, 1]."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    return to_hex(colormaps["viridis"](min(max(t, 0.0), 1.0)))


def _ink(t: float) -> str:
    """Black or white, whichever contrasts more with viridis(t) (WCAG 2 relative luminance and
    contrast ratio), so every cell's number reads at 4.5:1 or better."""
    colour = _viridis(t)
    channels = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    lum = sum(w * (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4)
              for w, c in zip((0.2126, 0.7152, 0.0722), channels))
    return "#000000" if (lum + 0.05) / 0.05 >= 1.05 / (lum + 0.05) else "#ffffff"


def class_colours(classes: list[str]) -> dict[str, str]:
    if len(classes) <= len(OKABE_ITO):
        return dict(zip(classes, OKABE_ITO))
    return {c: _viridis(i / max(len(classes) - 1, 1)) for i, c in enumerate(classes)}


def thumbnail(path, px: int = THUMB_PX) -> str | None:
    """A PNG data URI of the image at `path`, `px` on its long side (nearest-neighbour when
    enlarging, so 8x8 digits stay crisp), or None when it cannot be read."""
    from PIL import Image

    from .inputs import load_image

    try:
        image = load_image(path)
    except Exception:  # an unreadable item is already reported by extraction; no thumbnail
        return None
    w, h = image.size
    scale = px / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    image = image.resize(size, Image.NEAREST if scale >= 1 else Image.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# -- figures -----------------------------------------------------------------------------------
def _matrix_svg(values, rows, cols, fmt, row_title: str, col_title: str) -> str:
    """A heatmap: viridis cells (scaled between the smallest and largest finite value), the
    value written in each cell, row and column names."""
    finite = [v for row in values for v in row if v is not None]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    cell, left, top = 56, 150, 30
    width, height = left + cell * len(cols) + 10, top + cell * len(rows) + 60
    out = [f'<svg class="matrix" role="img" viewBox="0 0 {width} {height}" width="{width}" '
           f'height="{height}" xmlns="http://www.w3.org/2000/svg">']
    for j, name in enumerate(cols):
        x = left + j * cell + cell / 2
        out.append(f'<text x="{x}" y="{top + cell * len(rows) + 16}" text-anchor="end" '
                   f'transform="rotate(-30 {x} {top + cell * len(rows) + 16})">{esc(name)}'
                   '</text>')
    for i, name in enumerate(rows):
        y = top + i * cell + cell / 2
        out.append(f'<text x="{left - 6}" y="{y + 4}" text-anchor="end">{esc(name)}</text>')
        for j, value in enumerate(values[i]):
            t = 0.5 if value is None or hi == lo else (value - lo) / (hi - lo)
            fill = "#dddddd" if value is None else _viridis(t)
            x = left + j * cell
            out.append(f'<rect x="{x}" y="{top + i * cell}" width="{cell - 2}" '
                       f'height="{cell - 2}" fill="{fill}"><title>{esc(rows[i])} / '
                       f'{esc(cols[j])}: {fmt(value)}</title></rect>')
            out.append(f'<text x="{x + cell / 2 - 1}" y="{top + i * cell + cell / 2 + 4}" '
                       f'text-anchor="middle" fill="{_ink(t)}">{fmt(value)}</text>')
    out.append(f'<text x="{left}" y="{top - 10}" class="axis">{esc(col_title)} →</text>')
    out.append(f'<text x="8" y="{top - 10}" class="axis">{esc(row_title)} ↓</text>')
    out.append("</svg>")
    return "".join(out)


def _ranking_svg(rows, metric: str) -> str:
    """Horizontal bars: each candidate's probe accuracy, whiskers its interval."""
    bar, left, width = 30, 250, 420
    height = 20 + bar * len(rows) + 20
    out = [f'<svg class="ranking" role="img" viewBox="0 0 {left + width + 240} {height}" '
           f'width="{left + width + 240}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
           '<defs><pattern id="placed" width="6" height="6" patternUnits="userSpaceOnUse" '
           'patternTransform="rotate(45)"><rect width="6" height="6" fill="#fff"/>'
           '<line x1="0" y1="0" x2="0" y2="6" stroke="#21918c" stroke-width="3"/></pattern>'
           '</defs>']
    for i, r in enumerate(rows):
        y = 20 + i * bar
        value = r.get(metric)
        out.append(f'<text x="{left - 8}" y="{y + bar / 2 + 4}" text-anchor="end">'
                   f'{esc(r["candidate"])}</text>')
        placed = over_budget(r)  # extrapolated from the fallback score, not measured
        if value is not None and math.isfinite(value):
            fill = "url(#placed)" if placed else \
                "#21918c" if r.get("tied") or i == 0 else "#8fc6c3"
            out.append(f'<rect x="{left}" y="{y + 5}" width="{width * min(max(value, 0), 1):.1f}" '
                       f'height="{bar - 10}" fill="{fill}" stroke="#21918c"><title>'
                       f'{esc(r["candidate"])}: {number(value)}'
                       f'{" (placed from its fallback score, not measured)" if placed else ""}'
                       '</title></rect>')
        if r.get("low") is not None:
            x0, x1, yc = left + width * r["low"], left + width * r["high"], y + bar / 2
            out.append(f'<path d="M{x0:.1f} {yc}H{x1:.1f}M{x0:.1f} {yc - 6}V{yc + 6}'
                       f'M{x1:.1f} {yc - 6}V{yc + 6}" stroke="#000" stroke-width="1.5"/>')
        label = number(value) + (" (tied)" if r.get("tied") and len(rows) > 1 else "") + \
            (" (placed, not measured)" if placed else "")
        out.append(f'<text x="{left + width + 8}" y="{y + bar / 2 + 4}">{label}</text>')
    out.append(f'<line x1="{left}" x2="{left}" y1="14" y2="{height - 14}" stroke="#444"/>')
    out.append(f'<line x1="{left + width}" x2="{left + width}" y1="14" y2="{height - 14}" '
               'stroke="#bbb" stroke-dasharray="3 3"/>')
    out.append("</svg>")
    return "".join(out)


def _scatter_svg(points, x_title: str, y_title: str) -> str:
    """Score (x) against measured accuracy (y), one labelled point per candidate; the axes are
    marked with the smallest and largest values they show."""
    size, pad = 300, 50
    xs = [p[1] for p in points]
    ys = [p[2] for p in points]

    def scale(v, lo, hi):
        return 0.5 if hi == lo else (v - lo) / (hi - lo)

    out = [f'<svg class="scatter" role="img" viewBox="0 0 {size + 220} {size + 40}" '
           f'width="{size + 220}" height="{size + 40}" xmlns="http://www.w3.org/2000/svg">',
           f'<rect x="{pad}" y="10" width="{size - pad}" height="{size - pad}" fill="none" '
           'stroke="#444"/>']
    for name, x, y in points:
        cx = pad + 12 + (size - pad - 24) * scale(x, min(xs), max(xs))
        cy = size - pad - 2 - (size - pad - 24) * scale(y, min(ys), max(ys))
        out.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="6" fill="#440154">'
                   f'<title>{esc(name)}: {number(x)}, {number(y)}</title></circle>')
        out.append(f'<text x="{cx + 9:.1f}" y="{cy + 4:.1f}" class="small">{esc(name)}</text>')
    bottom = size - pad + 10
    out += [f'<text x="{pad}" y="{bottom + 16}" class="small">{number(min(xs))}</text>',
            f'<text x="{size}" y="{bottom + 16}" text-anchor="end" class="small">'
            f'{number(max(xs))}</text>',
            f'<text x="{(pad + size) / 2}" y="{bottom + 32}" text-anchor="middle">'
            f'{esc(x_title)}</text>',
            f'<text x="{pad - 4}" y="{bottom - 2}" text-anchor="end" class="small">'
            f'{number(min(ys))}</text>',
            f'<text x="{pad - 4}" y="22" text-anchor="end" class="small">{number(max(ys))}'
            '</text>',
            f'<text x="14" y="{(size - pad) / 2}" text-anchor="middle" '
            f'transform="rotate(-90 14 {(size - pad) / 2})">{esc(y_title)}</text>',
            "</svg>"]
    return "".join(out)


def _map_svg(points, colours) -> str:
    """One circle (class "point") per item, coloured by its label; a ring marks an item the
    classifier got wrong out of fold. Each carries its label in an SVG <title>."""
    size, pad = 640, 16
    xs = [p["x"] for p in points]
    ys = [p["y"] for p in points]

    def scale(v, lo, hi):
        return 0.5 if hi == lo else (v - lo) / (hi - lo)

    out = [f'<svg id="map" class="map" role="img" viewBox="0 0 {size} {size}" width="{size}" '
           f'height="{size}" xmlns="http://www.w3.org/2000/svg">',
           f'<rect x="0" y="0" width="{size}" height="{size}" fill="#fafafa" stroke="#ccc"/>']
    for i, p in enumerate(points):
        cx = pad + (size - 2 * pad) * scale(p["x"], min(xs), max(xs))
        cy = size - pad - (size - 2 * pad) * scale(p["y"], min(ys), max(ys))
        wrong = p["predicted"] != p["label"]
        ring = ' stroke="#000" stroke-width="2.5"' if wrong else ' stroke="#333" stroke-width="0.6"'
        out.append(f'<circle class="point" data-i="{i}" cx="{cx:.1f}" '
                   f'cy="{cy:.1f}" r="{7 if wrong else 6}" fill="{colours[p["label"]]}"{ring}>'
                   f'<title>{esc(p["id"])}: {esc(p["label"])}'
                   f'{" (predicted " + esc(p["predicted"]) + ")" if wrong else ""}</title>'
                   '</circle>')
    out.append("</svg>")
    return "".join(out)


# -- sections ----------------------------------------------------------------------------------
def _table(rows: list[list], header: list[str], cls: str = "") -> str:
    """The page's one table renderer. Every header and cell goes through `esc`: a cell is
    text, whatever the data put in it, unless the page built it as `Html`."""
    head = "".join(f'<th scope="col">{esc(h)}</th>' for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _figure(svg: str, caption: str) -> str:
    """The figure, named for screen readers by its caption (which states data and settings)."""
    name = "fig-" + hashlib.sha1(caption.encode()).hexdigest()[:10]
    svg = svg.replace("<svg ", f'<svg aria-labelledby="{name}" ', 1)
    return f'<figure>{svg}<figcaption id="{name}">{caption}</figcaption></figure>'



def _verdict(s: dict) -> str:
    v = s["verdict"]
    confidence = f"{v['confidence'] * 100:.0f}%"
    parts = []
    if v["source"]:
        parts.append(f"Source: <b>{esc(v['source'])}</b> (the closest, "
                     f"{esc(s['settings']['similarity_metric'])} {number(v['source_similarity'])})"
                     ".")
    parts.append(f"Model and layer: <b>{esc(v['candidate'])}</b>"
                 + (f" (the cheapest of the {len(v['tied'])} tied candidates)."
                    if len(v["tied"]) > 1 else " (ranked first)."))
    if v["transfer"]:
        parts.append(f"How: <b>{esc(v['transfer'])}</b> (the rule of thumb for this size and "
                     f"similarity: {esc(v['strategy'])}).")
    else:
        parts.append("How: unknown: the rule of thumb needs a source (give --sources).")
    parts.append(f"Expected accuracy: <b class='acc'>{number(v['accuracy'])}</b> "
                 f"({confidence} interval {number(v['low'])} to {number(v['high'])}), "
                 f"{esc(v['classifier'])} on {esc(v['candidate'])}, judged by "
                 f"{esc(v['estimate'])}.")
    if v["next_command"]:
        parts.append(f"Next: {_code(v['next_command'])}")
    return ('<section id="verdict" class="verdict"><h2>Verdict</h2>'
            + "".join(f"<p>{p}</p>" for p in parts) + "</section>")


def _warnings(s: dict) -> str:
    items = s["warnings"]
    body = ("<ul>" + "".join(f"<li>{esc(w)}</li>" for w in items) + "</ul>" if items
            else "<p>None: no tiny class, no tie, no optimistic estimate.</p>")
    return f'<section id="warnings" class="warnings"><h2>Warnings</h2>{body}</section>'


def _similarity(s: dict) -> str:
    sim = s["similarity"]
    if sim is None:
        return ('<section id="similarity"><h2>Dataset similarity</h2><p>No source datasets '
                "were given (--sources), so there is nothing to compare the target with."
                "</p></section>")
    names = sim["names"]
    svg = _matrix_svg(sim["matrix"], names, names, number, "dataset", "dataset")
    caption = (f"{esc(sim['metric'])} between the mean embeddings of every pair of datasets, "
               f"all embedded by {esc(sim['probe'])}; brighter = more similar (viridis, "
               f"scaled from the smallest to the largest value shown). Closest source to "
               f"{esc(sim['target'])}: {esc(sim['closest'])} "
               f"({number(sim['closest_value'])}).")
    table = _table([[a] + [number(v) for v in row] for a, row in zip(names, sim["matrix"])],
                   ["dataset", *names])
    notes = "".join(f"<p class='note'>{esc(n)}</p>" for n in sim["notes"])
    return (f'<section id="similarity"><h2>Dataset similarity</h2>{_figure(svg, caption)}'
            f"{table}{notes}</section>")


def _ranking(s: dict) -> str:
    r = s["ranking"]
    metric = r["metrics"][0]
    rows = r["ranking"]
    settings = s["settings"]
    confidence = f"{settings['confidence'] * 100:.0f}%"
    chart = _figure(_ranking_svg(rows, metric),
                    f"{esc(metric)} of each candidate on the target ({s['items']} items): "
                    f"accuracy of a repeated, stratified cross-validated logistic-regression "
                    f"probe, as many repetitions as the {number(settings['budget_s'], 1)} s "
                    f"budget allowed (column 'method'); bars start at zero accuracy and the "
                    f"dashed line is perfect accuracy; whiskers: the {confidence} Nadeau-Bengio "
                    "corrected interval; dark bars: the leader and the candidates tied with it.")
    table = _table([[number(x["rank"]), x["candidate"], number(x["dim"]),
                     number(x.get(metric)),
                     f"{number(x.get('low'))} to {number(x.get('high'))}",
                     {True: "tied", False: "", None: "n/a"}.get(x.get("tied"), ""),
                     x.get("method", ""), number(x.get("seconds"), 1),
                     number(x.get("accuracy"))] for x in rows],
                   ["rank", "candidate", "dim", metric, f"{confidence} interval", "tied",
                    "method", "seconds", "validation accuracy"])
    validation = r["validation"][0] if r["validation"] else None
    scatter = ""
    if validation is not None:
        points = [(x["candidate"], x.get(metric), x.get("accuracy")) for x in rows
                  if x.get(metric) is not None and x.get("accuracy") is not None]
        tau = validation["kendall_tau"]
        if points:
            scatter = _figure(
                _scatter_svg(points, f"{metric} (ranking score)",
                             "measured accuracy (validation)"),
                f"Validation: each candidate's ranking score against its accuracy measured "
                f"independently (stratified 5-fold logistic-regression probe, seed 0, folds "
                f"the ranking never used), {len(points)} candidates. Kendall tau "
                f"<b class='tau'>{number(tau)}</b> (p {number(validation['p_value'])}), "
                f"weighted tau {number(validation['weighted_tau'])}"
                + ("; undefined when the scores or accuracies do not vary." if tau is None
                   else "."))
    summary = "".join(f"<p>{esc(line)}</p>" for line in r["summary"])
    return (f'<section id="ranking"><h2>Model ranking</h2>{chart}{table}{summary}{scatter}'
            "</section>")


def _advice(s: dict) -> str:
    a = s["advice"]
    if a is None:
        return ('<section id="advice"><h2>Rule of thumb</h2><p>Not applied: it needs a source '
                "dataset to measure the similarity to (--sources).</p></section>")
    size = (f"{a['items']} items in {a['classes']} classes = "
            f"{number(a['items_per_class'], 1)} per class" if a["classes"] else
            f"{a['items']} items (no labels)")
    rows = [["target size", f"{size}: {'small' if a['small'] else 'large'} (small below "
             f"{a['small_below']} per class)"],
            ["similarity", f"{a['metric']} {number(a['similarity'])} to "
             f"{a['source']} with {a['model']}@{a['layer']}: "
             f"{'similar' if a['similar'] else 'dissimilar'} (similar from "
             f"{number(a['similar_above'], 2)})"],
            ["advice", a["strategy"]],
            ["next", _code(a["command"])]]
    rows += [["also", _code(line)] for line in a["also"]]
    return (f'<section id="advice"><h2>Rule of thumb</h2>'
            f"{_table(rows, ['', ''], 'plain')}</section>")


def _classifier(s: dict) -> str:
    c = s["classifier"]
    rep = c["report"]
    grid = c["grid_search"]
    labels = rep["labels"]
    headline = _table([[number(rep["accuracy"]), number(rep["balanced_accuracy"]),
                        number(rep["f1_macro"]), number(rep["f1_weighted"]),
                        f"{number(c['low'])} to {number(c['high'])}",
                        number(grid["cv_score"])]],
                      ["accuracy", "balanced accuracy", "macro F1", "weighted F1",
                       "accuracy interval", "grid search's own score (optimistic)"])
    how = (f"{esc(c['classifier'])} on the features of {esc(s['verdict']['candidate'])}, "
           f"{rep['n']} items; out-of-fold predictions of a nested cross-validation: "
           f"{c['outer_folds']} stratified outer folds (seed {c['seed']}), hyper-parameters "
           f"chosen inside each training part by an inner {c['inner_folds']}-fold grid search "
           f"scored by {esc(grid['scoring'])}. Fold accuracies: "
           + ", ".join(number(a) for a in c["fold_accuracies"]) + ".")
    matrix = _figure(_matrix_svg(rep["confusion_matrix"], labels, labels, number, "true",
                                 "predicted"),
                     f"Confusion matrix: rows are the true class, columns the predicted one, "
                     f"cells count items (out-of-fold predictions, {rep['n']} items); brighter "
                     "= more items.")
    matrix_table = _table([[t] + [number(v) for v in row]
                           for t, row in zip(labels, rep["confusion_matrix"])],
                          ["true \\ predicted", *labels])
    per_class = _table([[p["class"], number(p["precision"]), number(p["recall"]),
                         number(p["f1"]), number(p["support"])] for p in rep["per_class"]],
                       ["class", "precision", "recall", "F1", "support"])
    return (f'<section id="classifier"><h2>Classifier</h2><p>{how}</p>{headline}'
            f'<h3>Confusion matrix</h3>{matrix}{matrix_table}'
            f'<h3>Per-class metrics</h3>{per_class}</section>')


def _map(s: dict, colours: dict) -> str:
    m = s["map"]
    legend = "".join(f'<span class="key"><span class="swatch" style="background:{col}"></span>'
                     f"{esc(c)}</span>" for c, col in colours.items())
    caption = (f"{esc(m['method'].upper())} projection of the {s['items']} x {s['dim']} "
               f"features of {esc(m['candidate'])} to two dimensions (seed "
               f"{s['settings']['seed']}); one point per target item, coloured by its label "
               "(Okabe-Ito palette); a black ring marks an item the classifier got wrong out "
               "of fold. Hover over a point for its thumbnail, id and label (Escape hides it); "
               "the table below lists every point.")
    rows = [[p["id"], p["label"], p["predicted"], number(p["x"]), number(p["y"])]
            for p in m["points"]]
    table = _table(rows, ["id", "label", "predicted (out of fold)", "x", "y"])
    return (f'<section id="map-section"><h2>Embedding map</h2><div class="legend">{legend}'
            f'<span class="key"><span class="swatch ring"></span>misclassified</span></div>'
            f'{_figure(_map_svg(m["points"], colours), caption)}'
            '<div id="tip" class="tip" hidden></div>'
            f'<details><summary>Every point ({len(rows)} items)</summary>{table}</details>'
            '</section>')


def _confused(s: dict, thumbs: list) -> str:
    index = {p["id"]: i for i, p in enumerate(s["map"]["points"])}
    blocks = []
    for c in s["confused"]:
        cards = "".join(
            f'<figure class="thumb">{_thumb_html(thumbs[index[i]], s["map"]["points"][index[i]])}'
            f"<figcaption>{esc(i)}</figcaption></figure>" for i in c["ids"])
        blocks.append(f"<div class='confusion'><h3>true {esc(c['true'])} → predicted "
                      f"{esc(c['predicted'])}: {c['count']} item(s)</h3>"
                      f"<div class='thumbs'>{cards}</div></div>")
    body = (f"<div class='confusions'>{''.join(blocks)}</div>" if blocks
            else "<p>No item was misclassified out of fold.</p>")
    return (f'<section id="confused"><h2>Most confused images</h2><p>The misclassified items '
            f"of the out-of-fold predictions, the most frequent confusions first.</p>{body}"
            "</section>")


def _thumb_html(uri, point) -> str:
    if uri:
        return f'<img src="{uri}" alt="{esc(point["id"])}" width="{THUMB_PX}">'
    return f'<span class="text-item">{esc((point.get("text") or point["id"])[:120])}</span>'


def _settings(s: dict) -> str:
    st, t = s["settings"], s["timings"]
    rows = [["target", f"{s['target']} ({s['dataset']}), {s['items']} items"],
            ["sources", ", ".join(st["sources"]) or "none"],
            ["candidates", ", ".join(st["models"])],
            ["classifier", st["classifier"]],
            ["ranking budget", f"{number(st['budget_s'], 1)} s"],
            ["folds (at most)", number(st["cv"])], ["seed", number(st["seed"])],
            ["embedkit", s["embedkit"]]]
    rows += [[k.removesuffix("_s").replace("_", " ") + " time", f"{number(v, 1)} s"]
             for k, v in t.items()]
    return (f'<section id="settings"><h2>Settings and timings</h2>'
            f"{_table(rows, ['', ''], 'plain')}</section>")


_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1a1a1a;
max-width:1120px;margin:0 auto;padding:16px 24px;background:#fff}
h1{font-size:1.6em;margin:.2em 0}h2{border-bottom:2px solid #21918c;padding-bottom:2px;
margin-top:1.8em}
.verdict{background:#eef7f6;border-left:6px solid #21918c;padding:4px 16px}
.verdict h2{border:0;margin-top:.4em}.warnings{background:#fff6e0;border-left:6px solid #E69F00;
padding:4px 16px}.warnings h2{border:0;margin-top:.4em}
table{border-collapse:collapse;margin:10px 0}th,td{border:1px solid #ccc;padding:3px 8px;
text-align:left}th{background:#f2f2f2}table.plain th{display:none}
figure{margin:12px 0}figcaption{font-size:.9em;color:#333;max-width:900px}
svg text{font:12px system-ui,sans-serif}svg text.small{font-size:11px}svg .axis{font-weight:600}
.legend{display:flex;flex-wrap:wrap;gap:12px;margin:6px 0}.key{display:inline-flex;
align-items:center;gap:4px}.swatch{width:12px;height:12px;border-radius:50%;display:inline-block}
.swatch.ring{border:2.5px solid #000;width:8px;height:8px}
.confusions{display:flex;flex-wrap:wrap;gap:8px 28px}.confusion h3{font-size:1em}
.thumbs{display:flex;flex-wrap:wrap;gap:10px}.thumb{margin:0;text-align:center}
.thumb img{image-rendering:pixelated;border:1px solid #999}.thumb figcaption{font-size:.75em}
.tip{position:absolute;background:#fff;border:1px solid #333;padding:6px;font-size:.85em;
box-shadow:2px 2px 6px rgba(0,0,0,.3);pointer-events:none}
.tip img{image-rendering:pixelated;display:block;margin:0 auto 4px}

code{background:#f4f4f4;padding:1px 4px}
"""

_JS = """
(function () {
  var items = JSON.parse(document.getElementById('items').textContent);
  var map = document.getElementById('map'), tip = document.getElementById('tip');
  if (!map || !tip) return;
  function show(e) {
    var c = e.target;
    if (!c.classList || !c.classList.contains('point')) return;
    var it = items[+c.getAttribute('data-i')];
    tip.textContent = '';
    if (it.thumb) {
      var img = document.createElement('img');
      img.src = it.thumb; img.alt = it.id; img.width = 96;
      tip.appendChild(img);
    } else if (it.text) {
      var t = document.createElement('div'); t.textContent = it.text; tip.appendChild(t);
    }
    var line = document.createElement('div');
    line.textContent = it.id + ': ' + it.label +
      (it.predicted !== it.label ? ' (predicted ' + it.predicted + ')' : '');
    tip.appendChild(line);
    var box = c.getBoundingClientRect();
    tip.style.left = (box.right + window.scrollX + 8) + 'px';
    tip.style.top = (box.top + window.scrollY - 8) + 'px';
    tip.hidden = false;
  }
  function hide() { tip.hidden = true; }
  map.addEventListener('mouseover', show);
  map.addEventListener('mouseout', hide);
  document.addEventListener('keydown', function (e) { if (e.key === 'Escape') hide(); });
  document.body.setAttribute('data-ready', '1');
})();
"""


def _script_json(value) -> str:
    """The page's one escaping for JSON inside a <script> element: every '<' is written
    \\u003c, so no '</script>' in the data ends the element and no '<!--' changes how the
    browser reads the rest of the page."""
    return json.dumps(value).replace("<", "\\u003c")


def render(s: dict) -> str:
    """The whole page for a study dict (see `embedkit.study.study`)."""
    points = s["map"]["points"]
    thumbs = [thumbnail(p["path"]) if p.get("path") and s["modality"] == "image" else None
              for p in points]
    colours = class_colours(sorted({p["label"] for p in points}))
    hover = [{"id": p["id"], "label": p["label"], "predicted": p["predicted"], "thumb": t,
              "text": (p.get("text") or "")[:200] or None} for p, t in zip(points, thumbs)]
    title = f"embedkit study: {s['target']}"
    return "".join([
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<header><h1>{esc(title)}</h1><p>{s['items']} items in {len(s['classes'])} classes "
        f"({esc(s['dataset'])}); which source, model and layer to transfer from, how, and "
        "how well. Every measured number on this page is in study.json beside it.</p></header>",
        "<main>", _verdict(s), _warnings(s), _similarity(s), _ranking(s), _advice(s),
        _classifier(s), _map(s, colours), _confused(s, thumbs), _settings(s), "</main>",
        f'<script type="application/json" id="items">{_script_json(hover)}</script>',
        f"<script>{_JS}</script></body></html>"])
