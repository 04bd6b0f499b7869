"""Black-box targets: any callable wrapped as a model the attacks accept.

Every target is an :class:`torch.nn.Module` with no parameters that maps float32 inputs
``(N, *input_shape)`` to scores ``(N, C)`` float32 on the inputs' device, in batches of at most
``batch_size`` rows, counting every input it sends in :attr:`BlackBoxTarget.queries`. The
score-based attacks (:class:`bastion.attacks.square.Square`) read the scores; the
decision-based ones (:class:`bastion.attacks.hopskipjump.HopSkipJump`) only their argmax.
Gradient attacks cannot run on a target: asking it for a gradient raises an
:class:`AttackInputError` that says so.

* :class:`ScoreTarget`: a function returning probabilities or logits, as numpy or torch.
* :class:`SklearnTarget`: a fitted scikit-learn classifier's ``predict_proba``.
* :class:`LabelTarget`: a function returning labels only (one-hot scores).
* :class:`HTTPTarget`: a JSON-over-HTTP endpoint, through :mod:`urllib` (no extra dependency).
* :class:`OnnxTarget`: an ONNX model file run by onnxruntime (the ``onnx`` extra).

Probabilities are returned as their natural logarithms, computed in the precision the target
gave them (clamped at the smallest positive float64): for a softmax model the score margins
then equal the logit margins, and probabilities that round to 1 in float32 still carry signal.
The argmax, which is all the predicted class depends on, is unchanged.

Every score a target returns is checked: shapes ``(n, num_classes)``, finite values, and for
probabilities non-negative rows summing to 1 within 1e-3; a violation raises
:class:`AttackInputError` naming the target.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from abc import abstractmethod
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from pydantic import Field
from torch import Tensor, nn

from bastion.attacks.settings import Settings, check_settings
from bastion.errors import AttackInputError, ConfigError

ScoreKind = Literal["probabilities", "logits"]
InputFormat = Literal["numpy", "torch"]
PROB_TOLERANCE = 1e-3
_TINY64 = float(np.finfo(np.float64).tiny)


class TargetSettings(Settings):
    """The settings every black-box target takes (errors name the target class)."""

    num_classes: int = Field(ge=2, description="classes the target scores")
    batch_size: int = Field(default=256, ge=1, description="the most rows per call")


class ScoreTargetSettings(TargetSettings):
    """Settings of :class:`ScoreTarget` (and :class:`SklearnTarget`, :class:`OnnxTarget`)."""

    kind: ScoreKind = Field(default="probabilities", description="what the scores are")
    inputs: InputFormat = Field(default="numpy", description="what the function is given")


class LabelTargetSettings(TargetSettings):
    """Settings of :class:`LabelTarget`."""

    inputs: InputFormat = Field(default="numpy", description="what the function is given")


class HTTPTargetSettings(TargetSettings):
    """Settings of :class:`HTTPTarget`."""

    kind: ScoreKind = Field(default="probabilities", description="what 'scores' holds")
    timeout: float = Field(default=10.0, gt=0, description="seconds to wait for each reply")


class BlackBoxTarget(nn.Module):
    """The common part of every target: batching, query counting, validation of the scores.

    Subclasses implement :meth:`_scores`, which gets one batch ``(n, *input_shape)`` (float32,
    CPU, detached) and returns float64 or float32 scores ``(n, num_classes)`` on the CPU.

    Attributes:
        num_classes: ``C``, the number of score columns.
        queries: inputs sent to the target so far (one per row); :meth:`reset_queries` zeroes it.
        calls: batches sent so far.
    """

    def __init__(self, num_classes: int, *, batch_size: int, name: str):
        super().__init__()
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.target_name = name
        self.queries = 0
        self.calls = 0
        self.eval()

    def extra_repr(self) -> str:
        return f"{self.target_name}, num_classes={self.num_classes}"

    def reset_queries(self) -> None:
        self.queries = 0
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        """Scores ``(N, num_classes)`` float32 on ``x``'s device for inputs ``(N, ...)``."""
        if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2:
            what = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise AttackInputError(
                f"{self.target_name}: expected a floating-point tensor (N, ...), got {what}"
            )
        if x.requires_grad and torch.is_grad_enabled():
            raise AttackInputError(
                f"{self.target_name}: a black-box target has no gradients; attack it with a "
                "score-based (square) or decision-based (hopskipjump) attack"
            )
        xc = x.detach().to(device="cpu", dtype=torch.float32)
        parts = []
        for i in range(0, xc.shape[0], self.batch_size):
            batch = xc[i : i + self.batch_size]
            scores = self._scores(batch)
            self.queries += int(batch.shape[0])
            self.calls += 1
            parts.append(self._check_shape(scores, batch.shape[0]))
        if not parts:
            return torch.zeros(0, self.num_classes, dtype=torch.float32, device=x.device)
        return torch.cat(parts).to(device=x.device, dtype=torch.float32)

    @abstractmethod
    def _scores(self, batch: Tensor) -> Tensor:
        """Scores ``(n, num_classes)`` of one batch (validated by the caller for shape)."""

    def _check_shape(self, scores: Tensor, n: int) -> Tensor:
        if scores.shape != (n, self.num_classes):
            raise AttackInputError(
                f"{self.target_name}: expected scores of shape ({n}, {self.num_classes}), "
                f"got {tuple(scores.shape)}"
            )
        return scores

    def _to_tensor(self, out: Any, what: str) -> Tensor:
        """A CPU tensor from numpy, torch or nested lists, float64 kept as float64."""
        try:
            if isinstance(out, Tensor):
                t = out.detach().cpu()
            else:
                t = torch.from_numpy(np.asarray(out, dtype=np.float64))
        except (TypeError, ValueError) as e:
            raise AttackInputError(f"{self.target_name}: {what} are not numeric: {e}") from None
        if not t.is_floating_point():
            t = t.to(torch.float64)
        return t

    def _validate_probabilities(self, p: Tensor) -> Tensor:
        """Check rows of probabilities; return their logarithms (float64 or float32)."""
        if not bool(torch.isfinite(p).all()):
            raise AttackInputError(f"{self.target_name}: probabilities contain NaN or infinity")
        if p.numel() and float(p.min()) < 0:
            raise AttackInputError(
                f"{self.target_name}: probabilities must be >= 0, got {float(p.min()):.4g}"
            )
        sums = p.sum(dim=1)
        bad = (sums - 1).abs() > PROB_TOLERANCE
        if bool(bad.any()):
            row = int(bad.nonzero()[0, 0])
            raise AttackInputError(
                f"{self.target_name}: probabilities must sum to 1 (within {PROB_TOLERANCE}), "
                f"row {row} sums to {float(sums[row]):.6g}; pass kind='logits' for "
                "unnormalised scores"
            )
        return p.clamp_min(_TINY64 if p.dtype == torch.float64 else 1e-38).log()

    def _validate_logits(self, z: Tensor) -> Tensor:
        if not bool(torch.isfinite(z).all()):
            raise AttackInputError(f"{self.target_name}: logits contain NaN or infinity")
        return z

    def _one_hot(self, labels: Any) -> Tensor:
        """One-hot scores from class indices ``(n,)``."""
        t = self._to_tensor(labels, "labels")
        if t.dim() != 1 or not bool(torch.isfinite(t).all()) or not bool((t == t.round()).all()):
            raise AttackInputError(
                f"{self.target_name}: expected labels as integers of shape (n,), got shape "
                f"{tuple(t.shape)} {t.dtype}"
            )
        lab = t.to(torch.int64)
        if lab.numel() and (int(lab.min()) < 0 or int(lab.max()) >= self.num_classes):
            raise AttackInputError(
                f"{self.target_name}: labels must lie in [0, {self.num_classes}), got range "
                f"[{int(lab.min())}, {int(lab.max())}]"
            )
        return torch.nn.functional.one_hot(lab, self.num_classes).to(torch.float32)


def _callable_name(fn: Callable[..., Any]) -> str:
    return str(getattr(fn, "__qualname__", None) or type(fn).__name__)


class ScoreTarget(BlackBoxTarget):
    """A function returning class scores, as a model.

    Args:
        fn: called with one batch ``(n, *input_shape)`` float32 (a numpy array, or a CPU tensor
            with ``inputs="torch"``); returns scores ``(n, num_classes)`` as a numpy array,
            a tensor or nested lists.
        num_classes: the number of classes ``C >= 2``.
        kind: ``"probabilities"`` (checked: >= 0, rows sum to 1 within 1e-3; returned as
            log-probabilities, see the module docstring) or ``"logits"`` (checked finite,
            returned as they are).
        batch_size: the most rows per call of ``fn``.
        inputs: ``"numpy"`` or ``"torch"``: what ``fn`` is given.
        name: names the target in error messages (default: ``fn``'s name).
    """

    def __init__(
        self,
        fn: Callable[[Any], Any],
        num_classes: int,
        *,
        kind: ScoreKind = "probabilities",
        batch_size: int = 256,
        inputs: InputFormat = "numpy",
        name: str | None = None,
    ):
        where = "ScoreTarget"
        if not callable(fn):
            raise ConfigError(f"{where}.fn: expected a callable, got {type(fn).__name__}")
        given = {"num_classes": num_classes, "batch_size": batch_size, "kind": kind}
        s = check_settings(ScoreTargetSettings, {**given, "inputs": inputs}, where=where)
        super().__init__(
            s.num_classes,
            batch_size=s.batch_size,
            name=name or f"ScoreTarget({_callable_name(fn)})",
        )
        self._fn = (fn,)  # a tuple, so that an nn.Module fn is not registered as a submodule
        self.kind: ScoreKind = s.kind
        self.inputs: InputFormat = s.inputs

    def _scores(self, batch: Tensor) -> Tensor:
        arg: Any = batch.numpy() if self.inputs == "numpy" else batch
        with torch.no_grad():
            out = self._fn[0](arg)
        scores = self._check_shape(self._to_tensor(out, "scores"), batch.shape[0])
        if self.kind == "probabilities":
            return self._validate_probabilities(scores)
        return self._validate_logits(scores)


class SklearnTarget(ScoreTarget):
    """A fitted scikit-learn classifier, through ``predict_proba``.

    Inputs ``(N, ...)`` are flattened to ``(N, F)`` for the estimator. Class ``i`` of the scores
    (and of the labels an attack is given) is ``estimator.classes_[i]``; map labels with
    ``numpy.searchsorted(estimator.classes_, labels)`` when the classes are not ``0..C-1``.
    """

    def __init__(self, estimator: Any, *, batch_size: int = 1024, name: str | None = None):
        label = name or f"SklearnTarget({type(estimator).__name__})"
        if not callable(getattr(estimator, "predict_proba", None)):
            raise AttackInputError(
                f"{label}: the estimator has no predict_proba; wrap its predict in LabelTarget"
            )
        classes = getattr(estimator, "classes_", None)
        if classes is None:
            raise AttackInputError(f"{label}: the estimator is not fitted (no classes_)")
        n_classes = len(np.asarray(classes))

        def proba(batch: npt.NDArray[np.float32]) -> Any:
            return estimator.predict_proba(batch.reshape(batch.shape[0], -1))

        super().__init__(proba, n_classes, kind="probabilities", batch_size=batch_size, name=label)
        self.classes = np.asarray(classes)


class OnnxTarget(ScoreTarget):
    """An ONNX model run by onnxruntime on the CPU, as a score-based target.

    Args:
        model: the path of a ``.onnx`` file, or an ``onnxruntime.InferenceSession``.
        num_classes: the number of classes ``C >= 2``.
        kind: what the chosen output holds, ``"logits"`` (default) or ``"probabilities"``.
        input_name: the graph input fed with the batch (default: the only input).
        output_name: the graph output read as scores (default: the first output).
        batch_size: the most rows per session run; the graph's batch axis must be dynamic
            unless ``batch_size`` equals its fixed size.

    Inputs are fed as float32 ``(n, *input_shape)``; a graph whose input is rank 2 gets them
    flattened to ``(n, F)``. Requires ``onnxruntime`` (``pip install bastion[onnx]``).
    """

    def __init__(
        self,
        model: Any,
        num_classes: int,
        *,
        kind: ScoreKind = "logits",
        input_name: str | None = None,
        output_name: str | None = None,
        batch_size: int = 256,
        name: str | None = None,
    ):
        try:
            import onnxruntime as ort  # type: ignore[import-untyped, unused-ignore]
        except ImportError:
            raise ConfigError(
                "OnnxTarget: onnxruntime is not installed; pip install 'bastion[onnx]'"
            ) from None
        label = name or f"OnnxTarget({model if isinstance(model, str) else 'session'})"
        if isinstance(model, str) or hasattr(model, "__fspath__"):
            from pathlib import Path

            path = Path(model)
            if not path.is_file():
                raise ConfigError(f"{label}: ONNX file not found: {path}")
            try:
                session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            except Exception as e:  # onnxruntime raises its own exception types
                raise AttackInputError(f"{label}: not a loadable ONNX model: {e}") from None
        elif callable(getattr(model, "run", None)) and callable(getattr(model, "get_inputs", None)):
            session = model
        else:
            raise ConfigError(
                f"{label}: expected a .onnx path or an onnxruntime.InferenceSession, got "
                f"{type(model).__name__}"
            )
        inputs = [i.name for i in session.get_inputs()]
        outputs = [o.name for o in session.get_outputs()]
        if input_name is None:
            if len(inputs) != 1:
                raise ConfigError(f"{label}.input_name: the graph has inputs {inputs}; name one")
            input_name = inputs[0]
        elif input_name not in inputs:
            raise ConfigError(f"{label}.input_name: {input_name!r} is not one of {inputs}")
        if output_name is None:
            output_name = outputs[0]
        elif output_name not in outputs:
            raise ConfigError(f"{label}.output_name: {output_name!r} is not one of {outputs}")
        rank = len(session.get_inputs()[inputs.index(input_name)].shape)
        feed, fetch = input_name, output_name

        def run(batch: npt.NDArray[np.float32]) -> Any:
            arr = batch.reshape(batch.shape[0], -1) if rank == 2 else batch
            return session.run([fetch], {feed: np.ascontiguousarray(arr, dtype=np.float32)})[0]

        super().__init__(run, num_classes, kind=kind, batch_size=batch_size, name=label)
        self.session = session


class LabelTarget(BlackBoxTarget):
    """A function returning predicted labels only, as a model with one-hot scores.

    Only the argmax of the scores means anything, so decision-based attacks (HopSkipJump) see
    the whole of the target; a score-based attack (Square) then only learns whether a point is
    adversarial, its margin is a flat ±1, and it degrades to a random search.

    Args:
        fn: called with one batch (numpy float32, or a CPU tensor with ``inputs="torch"``);
            returns class indices ``(n,)`` in ``[0, num_classes)``.
    """

    def __init__(
        self,
        fn: Callable[[Any], Any],
        num_classes: int,
        *,
        batch_size: int = 256,
        inputs: InputFormat = "numpy",
        name: str | None = None,
    ):
        where = "LabelTarget"
        if not callable(fn):
            raise ConfigError(f"{where}.fn: expected a callable, got {type(fn).__name__}")
        given = {"num_classes": num_classes, "batch_size": batch_size, "inputs": inputs}
        s = check_settings(LabelTargetSettings, given, where=where)
        super().__init__(
            s.num_classes,
            batch_size=s.batch_size,
            name=name or f"LabelTarget({_callable_name(fn)})",
        )
        self._fn = (fn,)
        self.inputs: InputFormat = s.inputs

    def _scores(self, batch: Tensor) -> Tensor:
        arg: Any = batch.numpy() if self.inputs == "numpy" else batch
        with torch.no_grad():
            out = self._fn[0](arg)
        return self._one_hot(out)


class HTTPTarget(BlackBoxTarget):
    """A model behind an HTTP endpoint speaking JSON.

    Each batch is sent as ``POST url`` with body ``{field: [[...], ...]}`` (the inputs as nested
    lists, shape ``(n, *input_shape)``); the reply must be a JSON object holding either
    ``"scores"`` ``(n, num_classes)`` (of ``kind``) or ``"labels"`` ``(n,)`` (one-hot scores,
    as :class:`LabelTarget`). Network failures, HTTP errors and malformed replies raise
    :class:`AttackInputError` naming the URL.

    Args:
        url: an ``http://`` or ``https://`` address.
        field: the JSON key of the inputs.
        timeout: seconds to wait for each reply.
        num_classes: ``C >= 2``.
        kind: what ``"scores"`` holds: ``"probabilities"`` or ``"logits"``.
        headers: extra request headers (an API key, say).
    """

    def __init__(
        self,
        url: str,
        *,
        num_classes: int,
        field: str = "inputs",
        timeout: float = 10.0,
        kind: ScoreKind = "probabilities",
        batch_size: int = 256,
        headers: dict[str, str] | None = None,
    ):
        where = "HTTPTarget"
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}.url: expected an http:// or https:// address, got {url!r}")
        given = {"num_classes": num_classes, "batch_size": batch_size, "kind": kind}
        s = check_settings(HTTPTargetSettings, {**given, "timeout": timeout}, where=where)
        super().__init__(s.num_classes, batch_size=s.batch_size, name=f"HTTPTarget({url})")
        self.url, self.field, self.timeout = url, str(field), float(s.timeout)
        self.kind: ScoreKind = s.kind
        self.headers = dict(headers or {})

    def _scores(self, batch: Tensor) -> Tensor:
        body = json.dumps({self.field: batch.tolist()}).encode("utf-8")
        request = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Accept": "application/json",
                **self.headers,
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as e:
            raise AttackInputError(f"{self.target_name}: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise AttackInputError(f"{self.target_name}: request failed: {reason}") from None
        try:
            reply = json.loads(raw)
        except ValueError:
            raise AttackInputError(f"{self.target_name}: the reply is not JSON") from None
        if isinstance(reply, dict) and "scores" in reply:
            scores = self._check_shape(self._to_tensor(reply["scores"], "scores"), batch.shape[0])
            if self.kind == "probabilities":
                return self._validate_probabilities(scores)
            return self._validate_logits(scores)
        if isinstance(reply, dict) and "labels" in reply:
            return self._one_hot(reply["labels"])
        keys = sorted(reply) if isinstance(reply, dict) else type(reply).__name__
        raise AttackInputError(
            f"{self.target_name}: expected a JSON object with 'scores' or 'labels', got {keys}"
        )
