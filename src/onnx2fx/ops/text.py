"""Text features on integer token ids: TfIdfVectorizer (string tokens have no torch representation)."""

from __future__ import annotations

import torch

from ..codegen.emitter import Emitter
from ..codegen.values import Value
from .registry import onnx_op


def _tfidf(x: torch.Tensor, grams: list[list[int]], indexes: list[int], size: int, min_n: int, max_n: int,
           max_skip: int, mode: str, weights: list[float]) -> torch.Tensor:
    """Counts of the pool's n-grams (tokens ``skip`` apart, for every skip up to ``max_skip``; unigrams
    counted once) per row, weighted as ``mode`` says."""
    pool = {tuple(gram): index for gram, index in zip(grams, indexes)}
    rows = x.reshape(1, -1) if x.dim() < 2 else x
    counts = torch.zeros(rows.shape[0], size, dtype=torch.float32)
    for b, row in enumerate(rows.tolist()):
        start_n = min_n
        for skip in range(1, max_skip + 2):
            for start in range(len(row)):
                for n in range(start_n, max_n + 1):
                    last = start + (n - 1) * skip
                    if last >= len(row):
                        break
                    index = pool.get(tuple(row[start:last + 1:skip]))
                    if index is not None:
                        counts[b, index] += 1
            if start_n == 1:
                start_n = 2
                if start_n > max_n:
                    break
    if mode == "IDF":
        counts = (counts > 0).float() * (torch.tensor(weights) if weights else 1.0)
    elif mode == "TFIDF" and weights:
        counts = counts * torch.tensor(weights)
    return counts if x.dim() >= 2 else counts[0]


@onnx_op("TfIdfVectorizer", 9)
def tfidf_vectorizer(g: Emitter, x: Value, *, max_gram_length: int, max_skip_count: int, min_gram_length: int,
                     mode: str, ngram_counts: list[int], ngram_indexes: list[int],
                     pool_int64s: list[int] | None = None, pool_strings: list[str] | None = None,
                     weights: list[float] | None = None) -> Value:
    if pool_int64s is None:
        raise g.unsupported("pool_strings", "string tokens (torch has no string tensors)")
    grams, indexes, k = [], [], 0
    for n, start in enumerate(ngram_counts, start=1):  # the pool lists all 1-grams, then all 2-grams, ...
        end = ngram_counts[n] if n < len(ngram_counts) else len(pool_int64s)
        for i in range(start, end, n):
            if min_gram_length <= n <= max_gram_length:
                grams.append(list(pool_int64s[i:i + n]))
                indexes.append(ngram_indexes[k])
            k += 1
    size = max(ngram_indexes) + 1
    sizes = [g.dim(x, 0), size] if x.rank == 2 else [size]
    return g.call(g.helper(_tfidf, leaf=True), x, grams, indexes, size, min_gram_length, max_gram_length,
                  max_skip_count, mode, list(weights or []), out_spec=[(sizes, torch.float32)])

