"""Out-of-distribution scores on a classifier's outputs and penultimate features.

* Energy (Liu, Wang, Owens and Li 2020, "Energy-based out-of-distribution detection"):
  ``E(x) = -T logsumexp(f(x) / T)``; in-distribution inputs have lower energy.
* Mahalanobis (Lee, Lee, Lee and Shin 2018, "A simple unified framework for detecting
  out-of-distribution samples and adversarial attacks"): class-conditional Gaussians with a tied
  covariance on the penultimate features ``phi(x)``; the score is
  ``min_c (phi - mu_c)^T Sigma^-1 (phi - mu_c)``.

Higher scores are more suspicious for both.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bastion.errors import ConfigError


def split_model(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """``(features, head)`` with ``model(x) == head(features(x))`` for a :class:`BastionModel`
    whose body is an ``nn.Sequential`` ending in a linear layer (MLP, CNNs, LeNet). Any other
    model gives ``(model, nn.Identity())``: the logits are its features.

    The modules share the model's parameters (no copy).
    """
    body = getattr(model, "body", None)
    normalize = getattr(model, "normalize", None)
    if (
        isinstance(body, nn.Sequential)
        and isinstance(normalize, nn.Module)
        and len(body) >= 2
        and isinstance(body[-1], nn.Linear)
    ):
        return nn.Sequential(normalize, *list(body)[:-1]), body[-1]
    return model, nn.Identity()


def energy_score(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """``(N,)`` energies ``-T logsumexp(logits / T)`` of logits ``(N, C)``."""
    return -temperature * torch.logsumexp(logits / temperature, dim=1)


class Mahalanobis(nn.Module):
    """The minimum class-conditional Mahalanobis distance of features ``(N, D)`` -> ``(N,)``.

    Holds the class means ``(C, D)`` and the whitening matrix ``W`` ``(D, D)`` with
    ``W^T W = Sigma^-1``, so a score is ``min_c ||W phi - W mu_c||^2``. Differentiable.
    """

    means_w: Tensor
    whiten: Tensor

    def __init__(self, means_w: Tensor, whiten: Tensor) -> None:
        super().__init__()
        self.register_buffer("means_w", means_w.float())
        self.register_buffer("whiten", whiten.float())

    @classmethod
    def fit(
        cls, feats: Tensor, labels: Tensor, num_classes: int, *, shrinkage: float = 1e-3
    ) -> Mahalanobis:
        """Fit class means and the tied covariance on features ``(N, D)`` with labels ``(N,)``;
        ``shrinkage`` times the mean variance is added to the diagonal so it is invertible."""
        f = feats.double()
        present = torch.bincount(labels, minlength=num_classes)
        if bool((present == 0).any()):
            missing = (present == 0).nonzero().squeeze(1).tolist()
            raise ConfigError(f"guard.ood: no calibration examples of class(es) {missing}")
        means = torch.zeros(num_classes, f.shape[1], dtype=torch.float64)
        means.index_add_(0, labels, f)
        means /= present[:, None].double()
        centred = f - means[labels]
        cov = centred.T @ centred / max(f.shape[0] - 1, 1)
        ridge = shrinkage * float(cov.diagonal().mean().clamp_min(1e-12))
        cov = cov + ridge * torch.eye(cov.shape[0], dtype=torch.float64)
        chol = torch.linalg.cholesky(cov)
        eye = torch.eye(cov.shape[0], dtype=torch.float64)
        whiten = torch.linalg.solve_triangular(chol, eye, upper=False)  # L^-1
        return cls(means @ whiten.T, whiten)

    def forward(self, feats: Tensor) -> Tensor:
        z = feats @ self.whiten.T
        return torch.cdist(z, self.means_w).pow(2).amin(dim=1)
