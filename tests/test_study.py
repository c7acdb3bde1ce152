"""`embedkit study`: the numbers (against scikit-learn's nested CV), the page (every number on
it is in study.json), and the page in a real browser (headless Chromium)."""

from __future__ import annotations

import json
import re
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


def json_numbers(value, out):
    """Every number in the study dict, and every number written inside its strings."""
    if isinstance(value, dict):
        for k, v in value.items():
            json_numbers(k, out)
            json_numbers(v, out)
    elif isinstance(value, list):
        for v in value:
            json_numbers(v, out)
    elif isinstance(value, str):
        out.update(float(t) for t in re.findall(r"\d+(?:\.\d+)?", value))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out.add(float(value))
    return out


def test_every_number_on_the_page_is_in_study_json(report):
    parser = PageText()
    parser.feed(report["page"].read_text())
    # the page's tokens are read without their sign (hyphens are also dashes): compare magnitudes
    known = np.abs(np.array(sorted(json_numbers(report["json"], set()))))
    shown = re.findall(r"\d+(?:\.\d+)?", " ".join(parser.text))
    assert len(shown) > 100
    for token in shown:
        decimals = len(token.partition(".")[2])
        # a number printed with decimals is the JSON's rounded; a whole number is exact
        tolerance = 0.5 * 10.0 ** -decimals + 1e-9 if decimals else 1e-9
        value = float(token)
        # a percentage (the interval's 95%) is the fraction in the JSON
        assert (np.abs(known - value) <= tolerance).any() or \
            (np.abs(known * 100 - value) <= tolerance).any(), f"{token} is not in study.json"


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
