"""The study page escapes everything it did not write itself (issue 19).

A study page is something people send to each other, so a name in the data must never become
markup: a class folder named `<img src=x onerror=alert(1)>` or `<!--`, a manifest label
`</script><script>alert(4)</script>`, an id `<b onclick=alert(5)>x</b>`. One real study of a
target whose folder names, manifest labels and ids (and its own folder name) carry these
payloads is rendered; the same study dict with harmless names in their place is the reference.
The payload page must have exactly the reference's elements, attributes and comments (in
Python's html.parser and in headless Chromium's DOM), no event-handler attribute, its own script
run to the end, every section after the `<!--`, and each payload shown as text.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
from test_study import CHROMIUM_FLAGS, SECTIONS, PageText

#: What the target's labels and ids carry (the manifest's label and id columns).
PAYLOADS = ["<img src=x onerror=alert(1)>", "<!--", "</script><script>alert(4)</script>",
            "<b onclick=alert(5)>x</b>", "quote\" apostrophe' &amp;"]
#: Class folders (a folder name cannot hold '/'): item ids without an id column are their paths.
FOLDERS = ["<img src=x onerror=alert(1)>", "<!--", "<b onclick=alert(5)>x", "a\"b'c &amp;",
           "plain"]
TARGET = "target <img src=x onerror=alert(1)> &amp;"
SOURCE = "<!-- source"
NAMES = sorted({*PAYLOADS, *FOLDERS, TARGET, SOURCE}, key=len, reverse=True)


class Skeleton(HTMLParser):
    """A page's structure without its text: every element (tag and attribute names, in order)
    and every comment."""

    def __init__(self, page: str):
        super().__init__()
        self.elements, self.comments = [], []
        self.feed(page)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, tuple(name for name, _ in attrs)))

    def handle_comment(self, data):
        self.comments.append(data)

    @property
    def handlers(self) -> list:
        """Event-handler attributes (onerror, onclick, ...) anywhere on the page."""
        return [(tag, a) for tag, names in self.elements for a in names if a.startswith("on")]

    @property
    def scripts(self) -> int:
        return sum(tag == "script" for tag, _ in self.elements)


def harmless(value, key=None):
    """The study dict with every payload and folder name replaced by a plain word (file paths
    kept, so the thumbnails are the same): the page this study would have had without them."""
    if isinstance(value, dict):
        return {harmless(k): harmless(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [harmless(v) for v in value]
    if isinstance(value, str) and key != "path":
        for i, name in enumerate(NAMES):  # the longest first: one may start another
            value = value.replace(name, f"name{i}")
    return value


@pytest.fixture(scope="module")
def pages(tmp_path_factory, digits_small):
    """One real study of 20 digits 5-9 (4 per class, the images of test_study's study, so their
    vectors are usually cached) whose manifest gives every class a payload label, half the items
    a payload id and the other half their path through a payload folder; its page, and the page
    of the same dict with harmless names."""
    import embedkit
    from embedkit import samples
    from embedkit.study_page import render

    root = tmp_path_factory.mktemp("escaping")
    target = root / TARGET
    rows = []
    for label, folder, digit in zip(PAYLOADS, FOLDERS, sorted(digits_small.glob("[0-9]"))):
        (target / folder).mkdir(parents=True)
        for n, image in enumerate(sorted(digit.glob("*.png"))):
            shutil.copy(image, target / folder / image.name)
            row = {"path": f"{folder}/{image.name}", "label": label}
            rows.append({**row, "id": f"{label} {n}"} if n % 2 else row)
    (target / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    source = samples.export("digits-source", root / SOURCE, per_class=1)
    s = embedkit.study(target, sources=[source], models=["efficientnet_lite0"], budget=1, cv=3,
                       output=root / "report")
    reference = harmless(s)
    points = [{**p, "path": None} for p in reference["map"]["points"]]
    text = json.dumps({**reference, "map": {**reference["map"], "points": points}})
    assert "<" not in text
    (root / "harmless").mkdir()
    (root / "harmless" / "index.html").write_text(render(reference))
    return {"study": s, "page": root / "report" / "index.html",
            "reference": root / "harmless" / "index.html"}


def test_the_study_carries_the_payloads_it_must_escape(pages):
    points = pages["study"]["map"]["points"]
    assert {p["label"] for p in points} == set(PAYLOADS)
    ids = [p["id"] for p in points]
    paths = [i for i in ids if i.endswith(".png")]  # items the manifest gave no id
    assert len(paths) == len(ids) / 2
    assert {i.rpartition("/")[0] for i in paths} == set(FOLDERS)
    assert {i.rpartition(" ")[0] for i in ids if i not in paths} == set(PAYLOADS)


def test_no_element_attribute_comment_or_script_comes_from_the_data(pages):
    page = Skeleton(pages["page"].read_text())
    reference = Skeleton(pages["reference"].read_text())
    assert page.elements == reference.elements
    assert page.comments == reference.comments == []
    assert page.handlers == [] and page.scripts == 2


def test_every_payload_is_shown_as_text_and_kept_as_data(pages):
    html = pages["page"].read_text()
    text = PageText()
    text.feed(html)
    shown = "".join(text.text)
    for payload in NAMES:
        assert payload in shown, payload
    assert text.headings == SECTIONS  # nothing after the '<!--' went missing
    items = html.split('<script type="application/json" id="items">', 1)[1]
    items = json.loads(items.split("</script>", 1)[0])
    assert [(i["id"], i["label"]) for i in items] == \
        [(p["id"], p["label"]) for p in pages["study"]["map"]["points"]]


def dom(page, profile) -> str:
    """The page's DOM after headless Chromium loaded it and ran its script."""
    try:
        return subprocess.run(["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                               "--dump-dom", page.resolve().as_uri()], capture_output=True,
                              text=True, timeout=120, check=True).stdout
    except subprocess.TimeoutExpired:  # headless Chromium waits for ever on an alert() dialog
        pytest.fail(f"{page}: Chromium never finished loading it; did a script from the data "
                    "open an alert()?")


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="chromium is not installed (Debian: apt-get install chromium)")
def test_the_browser_builds_no_element_from_the_data(pages, tmp_path):
    page = dom(pages["page"], tmp_path / "profile")
    reference = dom(pages["reference"], tmp_path / "profile")
    assert 'data-ready="1"' in page  # the page's own script ran to its end
    skeleton = Skeleton(page)
    assert skeleton.elements == Skeleton(reference).elements
    assert skeleton.handlers == [] and skeleton.comments == [] and skeleton.scripts == 2
    text = PageText()
    text.feed(page)
    assert text.headings == SECTIONS
    shown = "".join(text.text)
    for payload in NAMES:
        assert payload in shown, payload
