"""Layer 1 of the guard: validate and sanitise inputs before any model sees them.

Batch-level problems (wrong shape, a non-numeric dtype) raise :class:`DataError`, since no row
can be answered. Row-level problems (NaN/inf, values out of range, an invalid one-hot group, a
fractional integer feature, a changed immutable feature) give that row a reason; the guard then
rejects or flags it. Text inputs pass through a pluggable ``sanitize`` hook (``str -> str``:
length limits, Unicode normalisation, invisible-character removal) before tokenisation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from bastion.data.schema import TabularSchema
from bastion.errors import DataError

Sanitizer = Callable[[str], str]


class InputValidator:
    """Checks for ``(N, *input_shape)`` batches; every tensor it needs is built here, once.

    Args:
        input_shape: the shape of one example.
        bounds: the valid range ``(lo, hi)`` of every value.
        atol: slack allowed outside ``bounds``.
        clip: clamp out-of-range values into ``bounds`` instead of reporting them.
        schema: the tabular schema of ``(F,)`` inputs in unit space, or None.
        sanitize: a text sanitiser applied by :meth:`sanitize_text`, or None.
    """

    def __init__(
        self,
        *,
        input_shape: tuple[int, ...],
        bounds: tuple[float, float],
        atol: float = 1e-6,
        clip: bool = False,
        schema: TabularSchema | None = None,
        sanitize: Sanitizer | None = None,
    ) -> None:
        self.input_shape = tuple(int(s) for s in input_shape)
        self.bounds = (float(bounds[0]), float(bounds[1]))
        self.atol = float(atol)
        self.clip = bool(clip)
        self.schema = schema
        self.sanitize = sanitize
        self._groups: list[Tensor] = []
        self._integer: Tensor | None = None
        self._immutable: Tensor | None = None
        if schema is not None:
            width = len(schema.columns)
            if self.input_shape != (width,):
                raise DataError(
                    f"guard.validation: the schema has {width} encoded columns but the model "
                    f"takes inputs of shape {self.input_shape}"
                )
            self._groups = [torch.tensor(g, dtype=torch.long) for g in schema.categorical_groups()]
            integer = schema.integer_mask().bool()
            self._integer = integer.nonzero().squeeze(1) if bool(integer.any()) else None
            steps = []
            for feature in schema.features:
                if (
                    feature.type == "integer"
                    and feature.min is not None
                    and feature.max is not None
                ):
                    steps.append(feature.max - feature.min)
            self._int_steps = torch.tensor(steps, dtype=torch.float32)
            immutable = schema.immutable_mask().bool()
            self._immutable = immutable.nonzero().squeeze(1) if bool(immutable.any()) else None

    def check_batch(self, x: Tensor) -> Tensor:
        """Raise :class:`DataError` if ``x`` is not a batch of this validator's shape; return it
        as float32 (an integer or float64 batch is converted)."""
        if not isinstance(x, Tensor):
            raise DataError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        if tuple(x.shape[1:]) != self.input_shape or x.dim() != len(self.input_shape) + 1:
            raise DataError(
                f"x: expected shape (N, {', '.join(map(str, self.input_shape))}), "
                f"got {tuple(x.shape)}"
            )
        if x.dtype == torch.bool or x.is_complex():
            raise DataError(f"x: expected a real numeric dtype, got {x.dtype}")
        return x if x.dtype == torch.float32 else x.float()

    def validate(
        self, x: Tensor, reference: Tensor | None = None
    ) -> tuple[Tensor, list[str | None]]:
        """Check each row of a float32 batch ``x`` ``(N, *input_shape)``.

        Args:
            reference: for tabular inputs, the rows ``(N, F)`` (or one row ``(F,)``) the inputs
                must agree with on immutable features; None skips that check.

        Returns:
            ``(x_clean, reasons)``: the (possibly clipped) batch with non-finite values replaced
            by the lower bound, and per row ``None`` (valid) or the first reason it failed.
        """
        n = x.shape[0]
        flat = x.reshape(n, -1)
        reasons: list[str | None] = [None] * n
        finite = torch.isfinite(flat).all(dim=1)
        lo, hi = self.bounds
        bad_any = not bool(finite.all())
        if bad_any:
            flat = torch.where(torch.isfinite(flat), flat, torch.full_like(flat, lo))
        if self.clip:
            flat = flat.clamp(lo, hi)
            in_range = finite
        else:
            in_range = ((flat >= lo - self.atol) & (flat <= hi + self.atol)).all(dim=1)
        ok = finite & in_range
        if self.schema is not None:
            ok = ok & self._schema_checks(flat, reference, reasons, finite & in_range)
        if not bool(ok.all()):
            for i in (~ok).nonzero().squeeze(1).tolist():
                if not bool(finite[i]):
                    reasons[i] = "validation: NaN or infinite value"
                elif not bool(in_range[i]):
                    mn, mx = float(flat[i].min()), float(flat[i].max())
                    reasons[i] = (
                        f"validation: value out of range [{lo:g}, {hi:g}] "
                        f"(min {mn:.4g}, max {mx:.4g})"
                    )
        return (flat.reshape(x.shape) if (bad_any or self.clip) else x), reasons

    def _schema_checks(
        self, flat: Tensor, reference: Tensor | None, reasons: list[str | None], base: Tensor
    ) -> Tensor:
        ok = torch.ones(flat.shape[0], dtype=torch.bool)
        if self.schema is None:
            return ok
        tol = max(self.atol, 1e-4)
        names = [f.name for f in self.schema.features if f.type == "categorical"]
        for name, cols in zip(names, self._groups, strict=True):
            part = flat[:, cols]
            binary = ((part - part.round()).abs() <= tol).all(dim=1)
            one = (part.round().sum(dim=1) == 1) & binary
            self._note(reasons, ~one & base & ok, f"validation: feature {name!r} is not one-hot")
            ok &= one
        if self._integer is not None:
            raw = flat[:, self._integer] * self._int_steps
            whole = ((raw - raw.round()).abs() <= tol * self._int_steps.clamp_min(1)).all(dim=1)
            self._note(reasons, ~whole & base & ok, "validation: an integer feature is fractional")
            ok &= whole
        if reference is not None and self._immutable is not None:
            ref = reference.reshape(-1, flat.shape[1]).to(flat.dtype)
            if ref.shape[0] not in (1, flat.shape[0]):
                raise DataError(
                    f"reference: expected 1 or {flat.shape[0]} rows of {flat.shape[1]} columns, "
                    f"got shape {tuple(reference.shape)}"
                )
            same = ((flat[:, self._immutable] - ref[:, self._immutable]).abs() <= tol).all(dim=1)
            changed = [self.schema.columns[i] for i in self._immutable.tolist()]
            self._note(
                reasons, ~same & base & ok, f"validation: immutable feature changed {changed}"
            )
            ok &= same
        return ok

    @staticmethod
    def _note(reasons: list[str | None], mask: Tensor, reason: str) -> None:
        if bool(mask.any()):
            for i in mask.nonzero().squeeze(1).tolist():
                if reasons[i] is None:
                    reasons[i] = reason

    def sanitize_text(self, text: str) -> str:
        """Apply the text sanitiser hook (identity when none is set)."""
        if not isinstance(text, str):
            raise DataError(f"text: expected a str, got {type(text).__name__}")
        return self.sanitize(text) if self.sanitize is not None else text
