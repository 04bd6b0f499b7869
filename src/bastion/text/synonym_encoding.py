"""Synonym encoding: one code per cluster of interchangeable words (SEM, Wang, Jin and He, 2021,
"Natural language adversarial defense through synonym encoding", UAI).

A word-substitution attacker swaps a word for one of its candidates (a synonym lexicon,
embedding neighbours). If the model sees every word through the code of its cluster, a swap
inside a cluster changes nothing; the model is trained on codes, so it loses only the
distinctions between words it treats as interchangeable anyway.

:func:`synonym_codes` clusters the vocabulary over the candidate graph (an edge ``w -- c`` for
every in-vocabulary candidate ``c`` of ``w``) with a size-capped union-find: edges are taken in
order of the more frequent endpoint's frequency, and two clusters merge only if the result holds
at most ``max_cluster`` words, so frequent words gather their neighbours first and no chain of
near-neighbours snowballs into one giant cluster. The code of a cluster is its most frequent
word's id. Special tokens, stop words and non-alphabetic tokens keep their own ids.

With the codes installed in a model (``TextModelSpec(synonym_codes=True)``,
:meth:`~bastion.text.models.TextModel.set_codes`) they travel with its weights, so a served
model applies them too.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch

from bastion.errors import ConfigError
from bastion.text.candidates import CandidateSource, stop_words
from bastion.text.vocab import UNK_ID, Vocabulary


@dataclass(frozen=True)
class SynonymCodes:
    """Cluster codes ``(V,)`` int64 (``codes[i]`` is the id representing id ``i``) and stats.

    Attributes:
        codes: the code of every vocabulary id.
        edges: candidate pairs (inside the vocabulary) considered.
        covered_edges: share of those pairs whose two words share a code (a swap along such a
            pair is invisible to the model).
        clusters: number of clusters with at least two words.
        largest: size of the largest cluster.
    """

    codes: torch.Tensor
    edges: int
    covered_edges: float
    clusters: int
    largest: int

    def summary(self) -> dict[str, float | int]:
        """JSON-ready statistics."""
        return {
            "edges": self.edges,
            "covered_edges": round(self.covered_edges, 4),
            "clusters": self.clusters,
            "largest_cluster": self.largest,
        }


def synonym_codes(
    vocab: Vocabulary, source: CandidateSource, *, max_cluster: int = 64
) -> SynonymCodes:
    """Cluster ``vocab`` over the candidates of ``source``; see the module docstring.

    Args:
        vocab: the model's vocabulary (ids ordered by any rule; counts decide precedence).
        source: candidate source, ``word -> replacement words`` (the attack's own source).
        max_cluster: largest allowed cluster (``>= 2``).

    Deterministic: ties in frequency are broken by id.
    """
    if isinstance(max_cluster, bool) or not isinstance(max_cluster, int) or max_cluster < 2:
        raise ConfigError(
            f"synonym_encoding.max_cluster: expected an integer >= 2, got {max_cluster!r}"
        )
    stop = stop_words()
    n = len(vocab)

    def eligible(i: int) -> bool:
        token = vocab.tokens[i]
        return i > UNK_ID and token.isalpha() and token not in stop

    # Rank: more frequent first, then lower id.
    rank = sorted(range(n), key=lambda i: (-vocab.counts[i], i))
    position = {i: r for r, i in enumerate(rank)}
    edges: set[tuple[int, int]] = set()
    for i in range(n):
        if not eligible(i):
            continue
        for cand in source(vocab.tokens[i]):
            j = vocab.id_of(cand)
            if j != i and eligible(j):
                edges.add((i, j) if position[i] < position[j] else (j, i))
    ordered = sorted(edges, key=lambda e: (position[e[0]], position[e[1]]))

    parent = list(range(n))
    size = [1] * n

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in ordered:
        ra, rb = find(a), find(b)
        if ra == rb or size[ra] + size[rb] > max_cluster:
            continue
        if position[rb] < position[ra]:
            ra, rb = rb, ra
        parent[rb] = ra  # the root is the cluster's most frequent word
        size[ra] += size[rb]

    roots = [find(i) for i in range(n)]
    covered = sum(1 for a, b in ordered if roots[a] == roots[b])
    sizes = Counter(roots).values()
    return SynonymCodes(
        codes=torch.tensor(roots, dtype=torch.int64),
        edges=len(ordered),
        covered_edges=covered / len(ordered) if ordered else 1.0,
        clusters=sum(1 for k in sizes if k > 1),
        largest=max(sizes, default=1),
    )
