"""`embedkit study`: the numbers (against scikit-learn's nested CV), the page (every number on
it is in study.json), and the page in a real browser (headless Chromium)."""

from __future__ import annotations

import json
import re
from collections import defaultdict
import shutil
from html.parser import HTMLParser

import numpy as np
import pytest

from embedkit.embeddings import EmbeddingSet
from embedkit.errors import UsageError
import hung

SECTIONS = ["Verdict", "Warnings", "Dataset similarity", "Model ranking", "Rule of thumb",
            "Classifier", "Embedding map", "Most confused images", "Settings and timings"]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def digits_pixels(per_class=8, classes=range(5, 10)) -> EmbeddingSet:
    """Raw 8x8 pixels of scikit-learn digits as a labelled set (no backbone needed)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    rows = np.concatenate([np.flatnonzero(d.target == c)[:per_class] for c in classes])
    return EmbeddingSet([f"{i}" for i in rows], d.data[rows],
                        {"label": np.asarray([str(t) for t in d.target[rows]], dtype=object)})


def test_honest_evaluation_is_sklearn_nested_cross_validation():
    from sklearn.metrics import confusion_matrix
    from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_predict
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    from embedkit.classify import CLASSIFIERS
    from embedkit.study import honest_evaluation

    es = digits_pixels()
    out = honest_evaluation(es, "svm-linear", cv=4, seed=3)
    y = es.labels.astype(str)
    grid = {f"clf__{k}": v for k, v in CLASSIFIERS["svm-linear"].grid(64, 0).items()}
    inner = GridSearchCV(Pipeline([("scale", StandardScaler()),
                                   ("clf", SVC(kernel="linear", random_state=3))]), grid,
                         cv=StratifiedKFold(4, shuffle=True, random_state=3),
                         scoring="balanced_accuracy")
    reference = cross_val_predict(inner, es.vectors, y,
                                  cv=StratifiedKFold(4, shuffle=True, random_state=3))
    assert out["predicted"] == list(reference)
    assert out["outer_folds"] == 4 and out["inner_folds"] == 4
    assert out["report"]["accuracy"] == pytest.approx(np.mean(reference == y))
    labels = out["report"]["labels"]
    assert out["report"]["confusion_matrix"] == confusion_matrix(y, reference,
                                                                 labels=labels).tolist()
    assert np.mean(out["fold_accuracies"]) == pytest.approx(out["report"]["accuracy"])
    assert 0 <= out["low"] <= out["report"]["accuracy"] <= out["high"] <= 1


def test_honest_evaluation_shrinks_its_folds_to_the_smallest_class_and_refuses_two():
    from embedkit.study import honest_evaluation

    out = honest_evaluation(digits_pixels(per_class=3), "ridge", cv=5)
    assert out["outer_folds"] == 3 and out["inner_folds"] == 2
    with pytest.raises(UsageError, match="at least 3 per class"):
        honest_evaluation(digits_pixels(per_class=2), "ridge")


def test_most_confused_orders_by_frequency_and_caps_the_items():
    from embedkit.study import most_confused

    report = {"labels": ["a", "b", "c"], "confusion_matrix": [[3, 2, 0], [0, 4, 1], [0, 0, 5]]}
    items = ([{"id": f"a{i}", "label": "a", "predicted": "b"} for i in range(2)]
             + [{"id": "b0", "label": "b", "predicted": "c"}]
             + [{"id": "c0", "label": "c", "predicted": "c"}])
    assert most_confused(report, items) == [
        {"true": "a", "predicted": "b", "count": 2, "ids": ["a0", "a1"]},
        {"true": "b", "predicted": "c", "count": 1, "ids": ["b0"]}]
    assert most_confused(report, items, shown=1) == [
        {"true": "a", "predicted": "b", "count": 2, "ids": ["a0"]}]


def test_sources_and_models_take_several_values_each():
    from embedkit.cli.study_cmds import study

    ctx = study.make_context("study", ["T", "--sources", "a", "b", "--models", "m1",
                                       "m2@blocks.4", "-o", "out", "--budget", "3"])
    assert ctx.params["sources"] == ("a", "b")
    assert ctx.params["models"] == ("m1", "m2@blocks.4")
    assert ctx.params["budget"] == 3 and ctx.params["output"] == "out"
    ctx = study.make_context("study", ["--sources=a", "b", "-s", "c", "--models", "m1", "-o", "o",
                                       "--seed", "-1", "--", "-a-target"])
    assert ctx.params["sources"] == ("a", "b", "c") and ctx.params["models"] == ("m1",)
    assert ctx.params["seed"] == -1 and ctx.params["target"] == "-a-target"


# -- one real study, shared by the tests below --------------------------------------------------
@pytest.fixture(scope="module")
def report(tmp_path_factory, digits_small):
    """The CLI's study of 20 real digits 5-9 (4 per class, shared with the ranking tests, so
    their vectors are often cached already) against two bundled sources: its JSON output,
    study.json and index.html."""
    from click.testing import CliRunner

    from embedkit import samples
    from embedkit.cli.main import cli

    root = tmp_path_factory.mktemp("study")
    source = samples.export("digits-source", root / "digits-source", per_class=2)
    animals = samples.export("animal-shape", root / "animal-shape", per_class=1)
    out = root / "report"
    result = CliRunner().invoke(cli, [
        "study", str(digits_small), "--sources", str(source), str(animals),
        "--models", "efficientnet_lite0@blocks.1", "efficientnet_lite0", "--budget", "3",
        "-o", str(out), "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    return {"stdout": json.loads(result.stdout), "json": json.loads((out / "study.json")
                                                                    .read_text()),
            "page": out / "index.html", "items": len(list(digits_small.glob("*/*.png"))),
            "out": out}


def test_study_json_is_what_the_api_returns_and_holds_the_decision(report):
    s = report["json"]
    assert report["stdout"] == s  # the CLI prints what embedkit.study returned
    assert s["items"] == report["items"] == 20 and len(s["map"]["points"]) == 20
    v = s["verdict"]
    assert v["candidate"] in {r["candidate"] for r in s["ranking"]["ranking"]}
    assert v["source"] == "digits-source"  # digits 0-4 are closer to 5-9 than silhouettes
    assert s["similarity"]["names"] == ["digits", "digits-source", "animal-shape"]
    assert v["transfer"] == "freeze"  # 4 items per class: small, and the source is similar
    assert v["accuracy"] == s["classifier"]["report"]["accuracy"]
    assert 0 <= v["low"] <= v["accuracy"] <= v["high"] <= 1
    assert any(w.startswith("tiny classes") for w in s["warnings"])
    # a similar source and a small target: the rule says top-layer features, so a pick at
    # blocks.1 is flagged (and one at pre_logits is not)
    flagged = [w for w in s["warnings"] if w.startswith("layer: the rule of thumb suggests "
                                                        "top-layer features")]
    assert len(flagged) == (v["layer"] == "blocks.1")
    assert s["ranking"]["validation"][0]["metric"] == "budgeted-probe"
    assert sum(map(sum, s["classifier"]["report"]["confusion_matrix"])) == 20


class PageText(HTMLParser):
    """The text a reader sees (no script or style content), and the h2 headings."""

    def __init__(self):
        super().__init__()
        self.text, self.headings, self._skip, self._in_h2 = [], [], 0, False

    def handle_starttag(self, tag, attrs):
        self._skip += tag in ("script", "style")
        self._in_h2 = tag == "h2" or self._in_h2

    def handle_endtag(self, tag):
        self._skip -= tag in ("script", "style")
        self._in_h2 = self._in_h2 and tag != "h2"

    def handle_data(self, data):
        if not self._skip:
            self.text.append(data)
            if self._in_h2:
                self.headings.append(data.strip())


class PageSections(HTMLParser):
    """The page as a reader sees it, by section id ("header" before the first): `prose`, the
    text outside tables and drawings; `tables`, each a list of rows of cell texts (header row
    first); `drawn`, the text the section's SVG figures draw (labels and tooltips)."""

    def __init__(self):
        super().__init__()
        self.prose, self.drawn = defaultdict(str), defaultdict(str)
        self.tables = defaultdict(list)
        self._section, self._skip, self._svg, self._cell = "header", 0, 0, None

    def handle_starttag(self, tag, attrs):
        self._section = dict(attrs)["id"] if tag == "section" else self._section
        self._skip += tag in ("script", "style")
        self._svg += tag == "svg"
        if tag == "table":
            self.tables[self._section].append([])
        elif tag == "tr":
            self.tables[self._section][-1].append([])
        elif tag in ("td", "th"):
            self._cell = self.tables[self._section][-1][-1]
            self._cell.append("")
        elif tag in ("p", "li", "h1", "h2", "h3", "figcaption", "summary", "title", "text"):
            self._write("\n")  # a block of its own: no fragment runs across two

    def handle_endtag(self, tag):
        self._skip -= tag in ("script", "style")
        self._svg -= tag == "svg"
        self._cell = None if tag in ("td", "th") else self._cell

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[-1] += data
        elif not self._skip:
            self._write(data)

    def _write(self, text):
        (self.drawn if self._svg else self.prose)[self._section] += text


def f3(value, digits: int = 3) -> str:
    """A number as the page states it: an integer whole, anything else to `digits` decimals."""
    if value is None:
        return "n/a"
    return str(value) if isinstance(value, int) else f"{value:.{digits}f}"


#: The validation probe's folds and seed are fixed by embedkit.ranking, not settings of a study:
#: the one sentence of the page whose numbers study.json does not hold.
VALIDATION_METHOD = ("stratified 5-fold logistic-regression probe, seed 0, folds the ranking "
                     "never used")


def expected_tables(s: dict) -> dict[str, list]:
    """Every table of the page, cell by cell, from the study.json field each cell shows."""
    sim, r, a, c = s["similarity"], s["ranking"], s["advice"], s["classifier"]
    metric, rep = r["metrics"][0], c["report"]
    percent = f"{s['settings']['confidence'] * 100:.0f}%"
    tied = {True: "tied", False: "", None: "n/a"}
    settings, timings = s["settings"], s["timings"]
    return {
        "similarity": [[["dataset", *sim["names"]]] + [
            [name, *map(f3, row)] for name, row in zip(sim["names"], sim["matrix"])]],
        "ranking": [[["rank", "candidate", "dim", metric, f"{percent} interval", "tied",
                      "method", "seconds", "validation accuracy"]] + [
            [f3(x["rank"]), x["candidate"], f3(x["dim"]), f3(x[metric]),
             f"{f3(x['low'])} to {f3(x['high'])}", tied[x["tied"]], x["method"],
             f3(x["seconds"], 1), f3(x["accuracy"])] for x in r["ranking"]]],
        "advice": [[["", ""],
                    ["target size", f"{a['items']} items in {a['classes']} classes = "
                     f"{f3(a['items_per_class'], 1)} per class: small (small below "
                     f"{a['small_below']} per class)"],
                    ["similarity", f"{a['metric']} {f3(a['similarity'])} to {a['source']} with "
                     f"{a['model']}@{a['layer']}: similar (similar from "
                     f"{f3(a['similar_above'], 2)})"],
                    ["advice", a["strategy"]], ["next", a["command"]],
                    *[["also", line] for line in a.get("also", [])]]],
        "classifier": [
            [["accuracy", "balanced accuracy", "macro F1", "weighted F1", "accuracy interval",
              "grid search's own score (optimistic)"],
             [f3(rep["accuracy"]), f3(rep["balanced_accuracy"]), f3(rep["f1_macro"]),
              f3(rep["f1_weighted"]), f"{f3(c['low'])} to {f3(c['high'])}",
              f3(c["grid_search"]["cv_score"])]],
            [["true \\ predicted", *rep["labels"]]] + [
                [label, *map(f3, row)] for label, row in zip(rep["labels"],
                                                             rep["confusion_matrix"])],
            [["class", "precision", "recall", "F1", "support"]] + [
                [p["class"], f3(p["precision"]), f3(p["recall"]), f3(p["f1"]),
                 f3(p["support"])] for p in rep["per_class"]]],
        "map-section": [[["id", "label", "predicted (out of fold)", "x", "y"]] + [
            [p["id"], p["label"], p["predicted"], f3(p["x"]), f3(p["y"])]
            for p in s["map"]["points"]]],
        "settings": [[["", ""],
                      ["target", f"{s['target']} ({s['dataset']}), {s['items']} items"],
                      ["sources", ", ".join(settings["sources"])],
                      ["candidates", ", ".join(settings["models"])],
                      ["classifier", settings["classifier"]],
                      ["ranking budget", f"{f3(settings['budget_s'], 1)} s"],
                      ["folds (at most)", f3(settings["cv"])], ["seed", f3(settings["seed"])],
                      ["embedkit", s["embedkit"]],
                      *[[f"{k.removesuffix('_s').replace('_', ' ')} time", f"{f3(v, 1)} s"]
                        for k, v in timings.items()]]],
    }


def expected_prose(s: dict) -> dict[str, list[str]]:
    """The sentences around the tables, each number written from its own field."""
    v, sim, r, c = s["verdict"], s["similarity"], s["ranking"], s["classifier"]
    metric, rep, validation = r["metrics"][0], c["report"], r["validation"][0]
    percent = f"{s['settings']['confidence'] * 100:.0f}%"
    points = s["map"]["points"]
    return {
        "header": [f"embedkit study: {s['target']}"] * 2 + [
            f"{s['items']} items in {len(s['classes'])} classes ({s['dataset']})"],
        "verdict": [f"(the closest, {s['settings']['similarity_metric']} "
                    f"{f3(v['source_similarity'])})",
                    f"{v['candidate']} (the cheapest of the {len(v['tied'])} tied candidates)",
                    f"Expected accuracy: {f3(v['accuracy'])} ({percent} interval "
                    f"{f3(v['low'])} to {f3(v['high'])}), {v['classifier']} on "
                    f"{v['candidate']}, judged by {v['estimate']}.", v["next_command"]],
        "warnings": list(s["warnings"]),
        "similarity": [f"all embedded by {sim['probe']}",
                       f"Closest source to {sim['target']}: {sim['closest']} "
                       f"({f3(sim['closest_value'])})", *sim["notes"]],
        "ranking": [f"{metric} of each candidate on the target ({s['items']} items)",
                    f"as many repetitions as the {f3(s['settings']['budget_s'], 1)} s budget",
                    f"the {percent} Nadeau-Bengio", *r["summary"],
                    f"({VALIDATION_METHOD}), {len(r['ranking'])} candidates. Kendall tau "
                    f"{f3(validation['kendall_tau'])} (p {f3(validation['p_value'])}), "
                    f"weighted tau {f3(validation['weighted_tau'])}."],
        "classifier": [f"{c['classifier']} on the features of {v['candidate']}, {rep['n']} "
                       f"items", f"{c['outer_folds']} stratified outer folds (seed {c['seed']})",
                       f"an inner {c['inner_folds']}-fold grid search",
                       "Fold accuracies: " + ", ".join(map(f3, c["fold_accuracies"])) + ".",
                       f"(out-of-fold predictions, {rep['n']} items)"],
        "map-section": ["".join(sorted({p["label"] for p in points})) + "misclassified",
                        f"{s['map']['method'].upper()} projection of the {s['items']} x "
                        f"{s['dim']} features of {s['map']['candidate']} to two dimensions "
                        f"(seed {s['settings']['seed']})", f"Every point ({len(points)} items)"],
        "confused": [line for x in s["confused"] for line in (
            f"true {x['true']} → predicted {x['predicted']}: {x['count']} item(s)", *x["ids"])],
    }


def drawn_values(s: dict) -> dict[str, set[str]]:
    """What each section's figures may draw besides names: the values of the fields they plot
    (the similarity matrix; ranking scores and validation accuracies, also as the scatter's
    axis ends; confusion counts and class labels; the map's labels)."""
    metric = s["ranking"]["metrics"][0]
    rep = s["classifier"]["report"]
    labels = {p[k] for p in s["map"]["points"] for k in ("label", "predicted")}
    return {
        "similarity": {f3(x) for row in s["similarity"]["matrix"] for x in row},
        "ranking": {f3(x[k]) for x in s["ranking"]["ranking"] for k in (metric, "accuracy")},
        "classifier": {f3(n) for row in rep["confusion_matrix"] for n in row} | set(labels),
        "map-section": labels,
    }


def _names(s: dict) -> list[str]:
    """The names a figure draws (datasets, candidates, item ids), longest first: their digits
    are not numbers."""
    names = {*s["similarity"]["names"], *(x["candidate"] for x in s["ranking"]["ranking"]),
             *(p["id"] for p in s["map"]["points"])}
    return sorted(names, key=len, reverse=True)


NUMBER = re.compile(r"\d+(?:\.\d+)?")


def test_every_number_on_the_page_is_its_own_field_of_study_json(report):
    """Each table cell equals the field it shows, each sentence is written from its fields,
    and once those are taken away no digit is left on the page; a figure draws only values of
    the fields it plots.  (Before: any number on the page could match any number anywhere in
    study.json, the digits inside an id included.)"""
    s = report["json"]
    page = PageSections()
    page.feed(report["page"].read_text())
    tables = expected_tables(s)
    assert set(page.tables) == set(tables)
    for section, expected in tables.items():
        assert page.tables[section] == expected, section
    prose = expected_prose(s)
    for section in set(page.prose) | set(prose):
        rest = page.prose[section]
        for fragment in prose.get(section, []):
            assert fragment in rest, f"{section}: {fragment!r} not in {rest!r}"
            rest = rest.replace(fragment, " ", 1)
        assert not NUMBER.search(rest), f"{section}: a number of no field in {rest!r}"
    allowed = drawn_values(s)
    assert set(page.drawn) == set(allowed)
    for section, drawn in page.drawn.items():
        for name in _names(s):
            drawn = drawn.replace(name, " ")
        strays = set(NUMBER.findall(drawn)) - allowed[section]
        assert not strays, f"{section}: the figure draws {strays}, values of no field it plots"


def test_the_page_is_self_contained(report):
    page = report["page"].read_text()
    assert "<link" not in page and not re.search(r"""src=(?!["']?data:)""", page)
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page
    thumbs = re.findall(r'src="(data:image/png;base64,[^"]+)"', page)
    assert thumbs and max(len(t) for t in thumbs) < 4000  # small thumbnails


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="chromium is not installed (Debian: apt-get install chromium)")
def test_the_page_in_headless_chromium(report, tmp_path):
    url = report["page"].resolve().as_uri()
    flags = [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = hung.run(["chromium", *flags, "--dump-dom", url], capture_output=True, text=True,
                   check=True).stdout
    s = report["json"]
    assert 'data-ready="1"' in dom  # the script ran to its end: the hover card is wired
    assert dom.count('<circle class="point"') == report["items"] == len(s["map"]["points"])
    parser = PageText()
    parser.feed(dom)
    assert parser.headings == SECTIONS
    text = " ".join(" ".join(parser.text).split())
    v = s["verdict"]
    assert f"Model and layer: {v['candidate']}" in text
    assert f"How: {v['transfer']}" in text
    assert f"Expected accuracy: {v['accuracy']:.3f} (95% interval {v['low']:.3f} to " \
           f"{v['high']:.3f})" in text
    tau = s["ranking"]["validation"][0]["kendall_tau"]
    assert f"Kendall tau {'n/a' if tau is None else format(tau, '.3f')}" in text
    shot = tmp_path / "study.png"
    hung.run(["chromium", *flags, f"--screenshot={shot}", "--window-size=1280,2400", url],
             capture_output=True, check=True)
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1280, 2400)


@pytest.mark.parametrize("grid, warned", [(0.8704, False), (0.9, True)])
def test_optimistic_cv_is_warned_only_where_the_page_shows_a_gap(grid, warned):
    from types import SimpleNamespace

    from embedkit.study import _warnings

    ranking = SimpleNamespace(validation=[], notes=[], rows=[])
    evaluation = {"grid_search": {"cv_score": grid}, "report": {"balanced_accuracy": 0.8701}}
    out = _warnings(np.array(["a"] * 20 + ["b"] * 20), ranking, {"tied": [{}]}, evaluation,
                    None, None)
    assert any(w.startswith("optimistic CV") for w in out) == warned, out


def test_the_rule_of_thumbs_layer_against_the_pick():
    from embedkit.study import _layer_warning

    top = {"model": "efficientnet_lite0", "layer": None, "candidate": "efficientnet_lite0"}
    low = {"model": "efficientnet_lite0", "layer": "blocks.4",
           "candidate": "efficientnet_lite0@blocks.4"}
    dissimilar, similar = {"small": True, "similar": False}, {"small": True, "similar": True}
    assert _layer_warning(dissimilar, top, tied=False) == [
        "layer: the rule of thumb suggests lower-layer (more generic) features, but the ranking "
        "measured efficientnet_lite0 best on this target; the verdict follows the measurement"]
    assert "blocks.4 as good as any (tied)" in _layer_warning(similar, low, tied=True)[0]
    assert _layer_warning(dissimilar, low, False) == _layer_warning(similar, top, False) == []
    assert _layer_warning({"small": False, "similar": True}, low, False) == []  # fine-tune
    assert _layer_warning(None, low, False) == []  # no sources, no rule


def test_without_sources_the_study_says_what_it_skipped(digits_small, tmp_path):
    import embedkit

    s = embedkit.study(digits_small, models=["efficientnet_lite0@blocks.1"], budget=2,
                       cache=tmp_path / "cache", output=tmp_path / "report")
    assert s["similarity"] is None and s["advice"] is None
    v = s["verdict"]
    assert v["candidate"] == "efficientnet_lite0@blocks.1" and v["source"] is None
    assert v["transfer"] is None and 0 <= v["low"] <= v["accuracy"] <= v["high"] <= 1
    assert not any(w.startswith("layer:") for w in s["warnings"])
    parser = PageText()
    parser.feed((tmp_path / "report" / "index.html").read_text())
    text = " ".join(" ".join(parser.text).split())
    assert "No source datasets were given (--sources)" in text
    assert "Not applied: it needs a source dataset" in text
    assert json.loads((tmp_path / "report" / "study.json").read_text()) == s


def test_the_report_folder_is_checked_before_the_study_runs(tmp_path, digits_small):
    import embedkit

    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text("the user's page")
    for output, message in ((tmp_path / "report.html", "the study writes a folder"),
                            (tmp_path / "site", "holds an index.html that is not a study's")):
        with pytest.raises(embedkit.errors.UsageError, match=message):
            embedkit.study(digits_small, output=output, cache=tmp_path / "never-made")
    assert (tmp_path / "site" / "index.html").read_text() == "the user's page"
    assert not (tmp_path / "never-made").exists(), "refused before any extraction"
