"""Word-vector evaluation: analogy accuracy (3CosAdd / 3CosMul) and word-pair similarity.

`evaluate_analogies` and `evaluate_word_pairs` reproduce gensim's `evaluate_word_analogies` /
`evaluate_word_pairs` (restrict_vocab = 300,000 most frequent words, case-insensitive, the
same OOV skipping), but solve every question at once: blocks of questions against blocks of the
vocabulary by matrix products, keeping only the candidates that can still reach the top 5
(`vector_search.blockwise_topk`).  Analogies: Mikolov et al. 2013 (the Google
questions-words set); 3CosMul: Levy & Goldberg 2014.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .errors import BadInputError
from .options import ANALOGY_METHODS
from .vector_search import blockwise_topk, unit_rows
from .vector_space import COSMUL_EPSILON, VectorSpace, as_space

__all__ = ["RESTRICT_VOCAB", "AnalogyReport", "PairsReport", "SectionScore",
           "analogy_sample_lines", "default_test_file", "evaluate_analogies",
           "evaluate_word_pairs", "read_analogies", "read_word_pairs"]

RESTRICT_VOCAB = 300_000


@dataclass
class SectionScore:
    section: str
    correct: int
    total: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0


@dataclass
class AnalogyReport:
    path: str
    method: str
    restrict_vocab: int
    sections: list[SectionScore]
    questions: int  # well-formed questions in the file
    oov_questions: int  # skipped: a word outside the restricted vocabulary

    @property
    def correct(self) -> int:
        return sum(s.correct for s in self.sections)

    @property
    def total(self) -> int:
        return sum(s.total for s in self.sections)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    @property
    def oov_ratio(self) -> float:
        return self.oov_questions / self.questions if self.questions else 0.0

    def as_dict(self) -> dict:
        return {"path": self.path, "method": self.method, "restrict_vocab": self.restrict_vocab,
                "accuracy": self.accuracy, "correct": self.correct, "evaluated": self.total,
                "questions": self.questions, "oov_questions": self.oov_questions,
                "oov_ratio": self.oov_ratio,
                "sections": [{**asdict(s), "accuracy": s.accuracy} for s in self.sections]}


def default_test_file(name: str) -> str:
    """A file of gensim's bundled test data (questions-words.txt, wordsim353.tsv, ...)."""
    from gensim.test.utils import datapath

    return datapath(name)


def analogy_sample_lines(per_section: int, path: str | None = None) -> list[str]:
    """The lines of an analogy file (default: the Google set) cut to the first `per_section`
    questions of each section, section headers kept: a quick, representative subset."""
    lines, kept = [], 0
    with open(path or default_test_file("questions-words.txt"), encoding="utf-8") as f:
        for line in f:
            if line.startswith(": "):
                lines.append(line)
                kept = 0
            elif kept < per_section:
                lines.append(line)
                kept += 1
    return lines


def _restricted_vocab(space: VectorSpace, n: int, case_insensitive: bool):
    """gensim's `ok_vocab` for the first `n` keys: folded key (upper-cased) -> row of its first
    occurrence; and the folded keys by row."""
    folded = [k.upper() for k in space.keys[:n]] if case_insensitive else space.keys[:n]
    return dict(zip(reversed(folded), range(len(folded) - 1, -1, -1))), folded


def read_analogies(path: str,
                   case_insensitive: bool = True) -> list[tuple[str, list[list[str]]]]:
    """The questions of an analogy file in the Google `questions-words.txt` format, by section.

    Returns a list of (section name, questions), each question the four words [a, b, c,
    expected] of a line ("a is to b as c is to expected"), upper-cased when `case_insensitive`.
    A line ': name' opens a section; lines of any other word count are skipped without being
    counted (as gensim does).  A question before the first section header, or a line that
    is not UTF-8, is a BadInputError.
    """
    sections: list[tuple[str, list[list[str]]]] = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise BadInputError(f"{path}:{lineno}: not UTF-8 text") from None
            if line.startswith(": "):
                sections.append((line.lstrip(": ").strip(), []))
                continue
            words = line.split()
            if len(words) != 4:
                continue
            if not sections:
                raise BadInputError(f"{path}:{lineno}: a question before the first "
                                    "': section' header")
            sections[-1][1].append([w.upper() for w in words] if case_insensitive else words)
    return sections


def evaluate_analogies(vectors, path: str | None = None, restrict_vocab: int = RESTRICT_VOCAB,
                       case_insensitive: bool = True, method: str = "add",
                       epsilon: float = COSMUL_EPSILON) -> AnalogyReport:
    """Accuracy on an analogy file in the Google `questions-words.txt` format, per section.

    Matches gensim's `KeyedVectors.evaluate_word_analogies` (method "add"): questions with a
    word outside the first `restrict_vocab` keys are skipped and counted; the answer is the best
    of the first `restrict_vocab` keys other than the three question words (in any case).
    """
    ANALOGY_METHODS.check(method)
    space = as_space(vectors)
    path = path or default_test_file("questions-words.txt")
    n = min(restrict_vocab, len(space))
    vocab, folded = _restricted_vocab(space, n, case_insensitive)
    sections = read_analogies(path, case_insensitive)
    questions, oov = 0, 0
    per_section, rows = [], []
    for name, quads in sections:
        ok = []
        for quad in quads:
            questions += 1
            if all(w in vocab for w in quad):
                ok.append(quad)
            else:
                oov += 1
        per_section.append((name, len(rows), len(ok)))
        rows.extend(ok)
    idx = np.array([[vocab[w] for w in q[:3]] for q in rows], dtype=np.int64).reshape(-1, 3)
    top = _analogy_top5(space, n, idx, method, epsilon)
    correct = np.zeros(len(rows), dtype=bool)
    for i, quad in enumerate(rows):
        ignore = set(quad[:3])
        predicted = None
        for r in top[i]:
            if r < 0:
                break
            predicted = folded[r]
            if predicted not in ignore:
                break
        correct[i] = predicted == quad[3]
    scores = [SectionScore(name, int(correct[start:start + count].sum()), count)
              for name, start, count in per_section]
    return AnalogyReport(str(path), method, restrict_vocab, scores, questions, oov)


def _analogy_top5(space: VectorSpace, n: int, idx: np.ndarray, method: str,
                  epsilon: float) -> np.ndarray:
    """Top 5 rows (question words excluded) for every question (a, b, c) = idx rows."""
    if not len(idx):
        return np.zeros((0, 5), dtype=np.int64)
    vectors = np.asarray(space.vectors[:n], dtype=np.float32)
    norms = space.norms[:n]
    unit = space.unit
    a, b, c = (unit[idx[:, j]] for j in range(3))
    if method == "add":
        # gensim: mean of the unit vectors (b + c - a), normalised; scores V m / |V|
        q = unit_rows((b + c) - a)

        def score_block(q0, q1, r0, r1):
            return (q[q0:q1] @ vectors[r0:r1].T) / norms[r0:r1]
    else:
        vt = np.ascontiguousarray(vectors.T)

        def score_block(q0, q1, r0, r1):
            m = len(range(q0, q1))
            s = np.concatenate([a[q0:q1], b[q0:q1], c[q0:q1]]) @ vt[:, r0:r1] / norms[r0:r1]
            sa, sb, sc = (1 + s[:m]) / 2, (1 + s[m:2 * m]) / 2, (1 + s[2 * m:]) / 2
            return (sb * sc) / (sa + np.float32(epsilon))
    return blockwise_topk(score_block, n, len(idx), 5, idx)


@dataclass
class PairsReport:
    path: str
    pearson: float
    pearson_p: float
    spearman: float
    spearman_p: float
    pairs: int  # pairs scored
    oov_pairs: int  # skipped: a word outside the restricted vocabulary

    @property
    def oov_ratio(self) -> float:
        return self.oov_pairs / (self.pairs + self.oov_pairs) if self.pairs + self.oov_pairs \
            else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "oov_ratio": self.oov_ratio}


def read_word_pairs(path: str, delimiter: str = "\t", case_insensitive: bool = True):
    """(word1, word2, score) triples from WordSim353 / SimLex-999 style files.

    gensim's format (`word1<TAB>word2<TAB>score`, '#' comments) is read as gensim reads it; the
    original SimLex-999.txt (a header with word1, word2, SimLex999 among other columns) is read
    from those columns."""
    triples = []
    fold = str.upper if case_insensitive else (lambda s: s)
    try:
        with open(path, encoding="utf8") as f:
            lines = f.readlines()
    except UnicodeDecodeError:
        raise BadInputError(f"{path}: not UTF-8 text") from None
    header = lines[0].rstrip("\n").split(delimiter) if lines else []
    if {"word1", "word2", "SimLex999"} <= set(header):
        w1, w2, sc = (header.index(c) for c in ("word1", "word2", "SimLex999"))
        for line in lines[1:]:
            parts = line.rstrip("\n").split(delimiter)
            try:
                triples.append((fold(parts[w1]), fold(parts[w2]), float(parts[sc])))
            except (IndexError, ValueError):
                continue
        return triples
    for line in lines:
        if not line or line.startswith("#"):
            continue
        parts = line.split(delimiter)
        if len(parts) != 3:
            continue
        try:
            triples.append((fold(parts[0]), fold(parts[1]), float(parts[2])))
        except ValueError:
            continue
    return triples


def evaluate_word_pairs(vectors, path: str | None = None, delimiter: str = "\t",
                        restrict_vocab: int = RESTRICT_VOCAB,
                        case_insensitive: bool = True) -> PairsReport:
    """Pearson and Spearman correlation of cosine similarities with human judgements, as gensim's
    `KeyedVectors.evaluate_word_pairs` (pairs with a word outside the first `restrict_vocab`
    keys are skipped and counted)."""
    from scipy import stats

    space = as_space(vectors)
    path = path or default_test_file("wordsim353.tsv")
    vocab, _ = _restricted_vocab(space, min(restrict_vocab, len(space)), case_insensitive)
    triples = read_word_pairs(path, delimiter, case_insensitive)
    ok = [(vocab[a], vocab[b], s) for a, b, s in triples if a in vocab and b in vocab]
    if not ok:
        raise BadInputError(f"{path}: no word pair to score (wrong format, or every pair out of "
                            f"the vocabulary of {space.name})")
    ia, ib, gold = (np.array(col) for col in zip(*ok))
    unit = space.unit
    model = np.einsum("ij,ij->i", unit[ia], unit[ib])
    pearson = stats.pearsonr(gold, model)
    spearman = stats.spearmanr(gold, model)
    return PairsReport(str(path), float(pearson[0]), float(pearson[1]), float(spearman[0]),
                       float(spearman[1]), len(ok), len(triples) - len(ok))
