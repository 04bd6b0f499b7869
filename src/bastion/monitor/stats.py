"""Two-sample drift statistics used by the monitor.

* Kolmogorov-Smirnov (per feature, and on confidences): ``scipy.stats.ks_2samp``.
* Population stability index over reference-quantile bins: ``sum (p - q) ln(p / q)``.
* Chi-square goodness of fit of a window's predicted-class counts to the reference class mix.
* Maximum mean discrepancy with an RBF kernel (Gretton et al. 2012, "A kernel two-sample
  test"), bandwidth by the median heuristic, p-value by a permutation test.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor


def _scipy_stats() -> Any:
    import scipy.stats  # type: ignore[import-untyped]

    return scipy.stats


def ks_pvalues(reference: Tensor, window: Tensor) -> Tensor:
    """Per-column two-sample KS p-values ``(D,)`` of ``reference`` ``(M, D)`` vs ``window``
    ``(N, D)``."""
    res = _scipy_stats().ks_2samp(reference.numpy(), window.numpy(), axis=0)
    return torch.as_tensor(np.atleast_1d(np.asarray(res.pvalue, dtype=np.float64)))


def psi(reference: Tensor, window: Tensor, *, bins: int = 10) -> float:
    """Population stability index of one variable, over ``bins`` reference-quantile bins."""
    edges = torch.quantile(reference.double(), torch.linspace(0, 1, bins + 1, dtype=torch.float64))
    inner = edges[1:-1].contiguous()
    p = torch.bincount(torch.bucketize(reference.double(), inner), minlength=bins).double()
    q = torch.bincount(torch.bucketize(window.double(), inner), minlength=bins).double()
    p = (p + 0.5) / (p.sum() + 0.5 * bins)
    q = (q + 0.5) / (q.sum() + 0.5 * bins)
    return float(((q - p) * (q / p).log()).sum())


def class_mix_test(reference_share: Tensor, counts: Tensor) -> tuple[float, float]:
    """``(chi-square p-value, PSI)`` of predicted-class ``counts`` ``(C,)`` against the
    reference class shares ``(C,)`` (shares floored at 1e-3 so no class is impossible)."""
    share = reference_share.double().clamp_min(1e-3)
    share = share / share.sum()
    n = float(counts.sum())
    expected = share * n
    stat = float(((counts.double() - expected) ** 2 / expected).sum())
    p_value = float(_scipy_stats().chi2.sf(stat, df=max(int(counts.numel()) - 1, 1)))
    q = (counts.double() + 0.5) / (n + 0.5 * counts.numel())
    return p_value, float(((q - share) * (q / share).log()).sum())


def mmd_permutation_test(
    reference: Tensor,
    window: Tensor,
    *,
    bandwidth: float,
    permutations: int,
    generator: torch.Generator,
) -> tuple[float, float]:
    """``(MMD^2 biased estimate, permutation p-value)`` for ``reference`` ``(M, D)`` vs
    ``window`` ``(N, D)`` with the kernel ``exp(-||a - b||^2 / (2 bandwidth^2))``."""
    z = torch.cat([reference, window]).double()
    m, total = reference.shape[0], z.shape[0]
    k = torch.exp(-torch.cdist(z, z).pow(2) / (2.0 * bandwidth**2))
    # MMD^2 (biased) = w^T K w with w = +1/m on reference rows, -1/n on window rows
    w = torch.full((total,), -1.0 / (total - m), dtype=torch.float64)
    w[:m] = 1.0 / m
    perms = [torch.arange(total)] + [
        torch.randperm(total, generator=generator) for _ in range(permutations)
    ]
    weights = torch.stack([w[p] for p in perms], dim=1)  # (total, 1 + permutations)
    stats = ((k @ weights) * weights).sum(dim=0)
    observed = stats[0]
    count = 1 + int((stats[1:] >= observed).sum())
    return float(observed), count / (permutations + 1)


def median_bandwidth(x: Tensor) -> float:
    """The median pairwise distance of the rows of ``x`` ``(M, D)`` (at least 1e-6)."""
    d = torch.pdist(x.double())
    return max(float(d.median()), 1e-6) if d.numel() else 1.0
