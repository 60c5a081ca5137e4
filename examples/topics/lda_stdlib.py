"""Topic distributions: LDA on the Python standard library's docstrings, compared with Jensen–Shannon and Hellinger.

Every document (a module's, class's or function's docstring) becomes a distribution over topics, and every topic
a distribution over words (scikit-learn's ``LatentDirichletAllocation``). Distances between such distributions
are what recommenders and topic browsers rank by: here ``kldiv.pairwise.js`` and ``kldiv.pairwise.hellinger``
give all pairs at once, which the example checks against, and times beside, the loop people write today
(``scipy.spatial.distance.jensenshannon`` in a double loop; it returns the JS *distance*, the square root of the
divergence). The text is the running Python's own source: nothing is downloaded.

    python examples/topics/lda_stdlib.py                 # about a minute on 2 busy CPU cores
    python examples/topics/lda_stdlib.py --docs 500 --topics 8
"""

from __future__ import annotations

import argparse
import ast
import sysconfig
import time
import warnings
from pathlib import Path

import numpy as np

import kldiv.pairwise


def docstrings(limit: int, min_words: int = 12) -> tuple[list[str], list[str]]:
    """Up to ``limit`` docstrings of at least ``min_words`` words from the standard library (tests and
    site-packages left out), evenly spaced over all of them in sorted file order, with a ``module:object`` name."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = ("site-packages", "test", "tests", "idlelib", "lib2to3")
    files = [p for p in sorted(root.rglob("*.py")) if not any(part in skip for part in p.relative_to(root).parts)]
    files = files[:: max(1, len(files) // max(1, limit // 4))]  # about 4 long docstrings per file: parse no more
    texts, names = [], []
    for path in files:
        relative = path.relative_to(root)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # old escape sequences in a few files
                tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        module = ".".join(relative.with_suffix("").parts)
        for node in [tree, *ast.walk(tree)]:
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                text = ast.get_docstring(node)
                if text and len(text.split()) >= min_words:
                    texts.append(text)
                    names.append(module if isinstance(node, ast.Module) else f"{module}:{node.name}")
    keep = np.unique(np.linspace(0, len(texts) - 1, min(limit, len(texts))).round().astype(int))
    return [texts[i] for i in keep], [names[i] for i in keep]


def jensenshannon_loop(P: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """The recipe people write today: SciPy's JS distance in a double loop, squared back to the divergence."""
    from scipy.spatial.distance import jensenshannon

    out = np.empty((len(P), len(Q)))
    for i, p in enumerate(P):
        for j, q in enumerate(Q):
            out[i, j] = jensenshannon(p, q) ** 2
    return out


def run(docs: int = 2000, topics: int = 12, loop_docs: int = 300, neighbours: int = 3, seed: int = 0,
        verbose: bool = True) -> dict:
    """Fit LDA, compare topics and documents, time the all-pairs JS; return the numbers (for the test)."""
    from sklearn.decomposition import LatentDirichletAllocation
    from sklearn.feature_extraction.text import CountVectorizer

    say = print if verbose else (lambda *args, **kwargs: None)
    texts, names = docstrings(docs)
    vectorizer = CountVectorizer(stop_words="english", token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z]{2,}\b", max_df=0.5,
                                 min_df=3)
    counts = vectorizer.fit_transform(texts)
    words = vectorizer.get_feature_names_out()
    lda = LatentDirichletAllocation(n_components=topics, learning_method="batch", max_iter=20, random_state=seed)
    doc_topic = lda.fit_transform(counts)  # rows: P(topic | document), each sums to 1
    topic_word = lda.components_ / lda.components_.sum(axis=1, keepdims=True)  # rows: P(word | topic)
    doc_topic = doc_topic / doc_topic.sum(axis=1, keepdims=True)  # exact sums in float64
    say(f"{len(texts)} docstrings, {len(words)} words, {topics} topics\n")
    labels = [" ".join(words[np.argsort(row)[::-1][:6]]) for row in topic_word]
    for t, label in enumerate(labels):
        say(f"topic {t:2d}: {label}")

    topic_js = kldiv.pairwise.js(topic_word, topic_word, base=2)  # bits: 0 (same) .. 1 (disjoint words)
    np.fill_diagonal(topic_js, np.inf)
    a, b = np.unravel_index(np.argmin(topic_js), topic_js.shape)
    say(f"\nclosest topics: {a} and {b}, JS = {topic_js[a, b]:.3f} bits (1 bit: no word in common)")

    start = time.perf_counter()
    doc_js = kldiv.pairwise.js(doc_topic, doc_topic)
    seconds_kldiv = time.perf_counter() - start
    doc_hellinger = kldiv.pairwise.hellinger(doc_topic, doc_topic)
    np.fill_diagonal(doc_js, np.inf)
    say(f"\nnearest documents by JS over topics (Hellinger beside it), {neighbours} queries:")
    rng = np.random.default_rng(seed)
    queries = rng.choice(len(texts), size=min(neighbours, len(texts)), replace=False)
    found = {}
    for i in queries:
        order = np.argsort(doc_js[i])[:neighbours]
        found[names[i]] = [names[j] for j in order]
        say(f"  {names[i]}  [topic {int(np.argmax(doc_topic[i]))}: {labels[int(np.argmax(doc_topic[i]))]}]")
        for j in order:
            say(f"      {doc_js[i, j]:.4f} nats  H = {doc_hellinger[i, j]:.3f}  {names[j]}")

    subset = doc_topic[:loop_docs]
    start = time.perf_counter()
    reference = jensenshannon_loop(subset, subset)
    seconds_loop = time.perf_counter() - start
    start = time.perf_counter()
    ours = kldiv.pairwise.js(subset, subset)
    seconds_subset = time.perf_counter() - start
    difference = float(np.max(np.abs(ours - reference)))
    say(f"\nall pairs of {len(subset)} documents: scipy jensenshannon double loop {seconds_loop:.2f} s, "
        f"kldiv.pairwise.js {seconds_subset:.4f} s ({seconds_loop / seconds_subset:.0f}x), largest difference "
        f"{difference:.1e} nats")
    say(f"all {len(texts)}² pairs with kldiv.pairwise.js: {seconds_kldiv:.3f} s "
        f"(the loop would take about {seconds_loop * (len(texts) / len(subset)) ** 2:.0f} s)")
    return {"documents": len(texts), "labels": labels, "topic_js": topic_js, "doc_js": doc_js,
            "doc_hellinger": doc_hellinger, "doc_topic": doc_topic, "neighbours": found, "names": names,
            "loop_difference": difference, "seconds_loop": seconds_loop, "seconds_kldiv": seconds_subset}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=2000, help="docstrings to fit")
    parser.add_argument("--topics", type=int, default=12)
    parser.add_argument("--loop-docs", type=int, default=300, help="documents for the timed SciPy double loop")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    run(args.docs, args.topics, args.loop_docs, seed=args.seed)


if __name__ == "__main__":
    main()
