"""Word-analogy evaluation: embedkit against gensim, same vectors, same questions, one process.

The full Google analogy set (gensim's questions-words.txt, 19,544 questions in 14 sections) on
the bundled 400,000-word GloVe 6B 50-d, restrict_vocab = 300,000 (gensim's default).  gensim
answers one question at a time (`most_similar` over 300,000 vectors per question); embedkit
answers blocks of questions against blocks of the vocabulary with matrix products.  The script
checks that both give the same accuracy (overall and per section) and prints the speed ratio;
then the same for the two word-pair sets.  gensim takes a long time on the full set (minutes
to tens of minutes, depending on the machine): `--per-section N` runs a sample instead.

    python benchmarks/analogy_eval.py [--per-section N] [--restrict-vocab 300000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time


def sample_file(per_section: int) -> str:
    from embedkit.wordvector_evaluation import analogy_sample_lines

    lines = analogy_sample_lines(per_section)
    fd, path = tempfile.mkstemp(suffix=".txt", prefix="analogies-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("".join(lines))
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-section", type=int, default=None,
                    help="only the first N questions of each section (default: all)")
    ap.add_argument("--restrict-vocab", type=int, default=300_000)
    args = ap.parse_args()

    import logging

    logging.disable(logging.INFO)  # gensim logs every section at INFO
    from embedkit.vector_space import as_space
    from embedkit.wordvector_evaluation import (default_test_file, evaluate_analogies,
                                                evaluate_word_pairs)
    from embedkit.wordvectors import load_glove

    path = sample_file(args.per_section) if args.per_section else \
        default_test_file("questions-words.txt")
    t0 = time.perf_counter()
    kv = load_glove()
    kv.fill_norms()  # gensim's derived state, computed outside its timing
    space = as_space(kv, "glove-6b-50d")
    space.unit, space.norms  # embedkit's derived state, likewise
    print(f"GloVe 6B 50-d: {len(kv.index_to_key):,} words loaded in "
          f"{time.perf_counter() - t0:.1f} s; questions: {path}", flush=True)

    t0 = time.perf_counter()
    ours = evaluate_analogies(space, path, restrict_vocab=args.restrict_vocab)
    t_ours = time.perf_counter() - t0
    print(f"embedkit: accuracy {ours.accuracy:.4f} ({ours.correct}/{ours.total}), "
          f"{ours.oov_questions} OOV questions skipped, {t_ours:.1f} s", flush=True)

    t0 = time.perf_counter()
    score, sections = kv.evaluate_word_analogies(path, restrict_vocab=args.restrict_vocab)
    t_gensim = time.perf_counter() - t0
    correct = sum(len(s["correct"]) for s in sections[:-1])
    total = correct + sum(len(s["incorrect"]) for s in sections[:-1])
    print(f"gensim:   accuracy {score:.4f} ({correct}/{total}), {t_gensim:.1f} s", flush=True)

    mismatched = [(m.section, m.correct, len(g["correct"]))
                  for m, g in zip(ours.sections, sections[:-1]) if m.correct != len(g["correct"])]
    for name, a, b in mismatched:
        print(f"  section {name}: embedkit {a} correct, gensim {b}")
    same = round(ours.accuracy, 3) == round(score, 3)
    print(f"same accuracy to 3 decimals: {'yes' if same else 'NO'}; identical per section: "
          f"{'yes' if not mismatched else 'NO'}")
    print(f"speed: embedkit {t_gensim / t_ours:.1f}x faster than gensim "
          f"({len(ours.sections)} sections, {total:,} questions)")

    for name in ("wordsim353.tsv", "simlex999.txt"):
        t0 = time.perf_counter()
        p = evaluate_word_pairs(space, default_test_file(name))
        t_p = time.perf_counter() - t0
        t0 = time.perf_counter()
        pearson, spearman, oov = kv.evaluate_word_pairs(default_test_file(name))
        t_g = time.perf_counter() - t0
        print(f"{name}: spearman embedkit {p.spearman:.4f} / gensim {spearman[0]:.4f}, pearson "
              f"{p.pearson:.4f} / {pearson[0]:.4f}, OOV {100 * p.oov_ratio:.2f}% / {oov:.2f}%; "
              f"{t_g / t_p:.1f}x faster")
    if args.per_section:
        os.unlink(path)
    return 0 if same and not mismatched else 1


if __name__ == "__main__":
    sys.exit(main())
