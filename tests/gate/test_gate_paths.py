"""Metric paths: parsing and resolution into a scorecard."""

from __future__ import annotations

from typing import Any

import pytest

from bastion.evaluation.gate import MetricNotFound, PathPart, parse_metric_path, resolve_metric


def test_parse_dotted_and_bracketed_parts() -> None:
    assert parse_metric_path("models.hardened.clean_accuracy") == (
        PathPart("models"),
        PathPart("hardened"),
        PathPart("clean_accuracy"),
    )
    assert parse_metric_path('attacks["pgd"][0.2].x') == (
        PathPart("attacks"),
        PathPart("pgd", bracketed=True),
        PathPart("0.2", bracketed=True),
        PathPart("x"),
    )
    assert parse_metric_path("worst_case[-1]") == (PathPart("worst_case"), PathPart("-1", True))


@pytest.mark.parametrize(
    ("path", "match"),
    [
        ("", "non-empty"),
        ("a..b", "empty part"),
        (".a", "empty part"),
        ("a.", "ends with"),
        ("a[0", "unclosed"),
        ("a[]", "empty brackets"),
        ("a]b", "unmatched"),
        ("a[0]b", "after ']'"),
    ],
)
def test_parse_rejects_malformed_paths(path: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_metric_path(path)


def test_resolve_reaches_eps_keys_with_dots(scorecard: dict[str, Any]) -> None:
    hardened = scorecard["models"]["hardened"]
    assert resolve_metric(scorecard, "models.hardened.attacks.pgd-50x5.0.2") == 0.604
    assert (
        resolve_metric(scorecard, 'models.hardened.attacks["pgd-50x5"]["0.1"]')
        == (hardened["attacks"]["pgd-50x5"]["0.1"])
    )
    # a number spelled differently from the scorecard's key still finds it
    assert resolve_metric(scorecard, "models.hardened.attacks.fgsm.0.20") == 0.699


def test_resolve_list_indices(scorecard: dict[str, Any]) -> None:
    curve = scorecard["models"]["hardened"]["accuracy_vs_eps"]["worst_case"]
    assert resolve_metric(scorecard, "models.hardened.accuracy_vs_eps.worst_case.1") == curve[1]
    assert resolve_metric(scorecard, "models.hardened.accuracy_vs_eps.worst_case[-1]") == 0.604


def test_resolve_prefers_the_longest_key() -> None:
    doc = {"models": {"v1": {"acc": 0.1}, "v1.2": {"acc": 0.9}}}
    assert resolve_metric(doc, "models.v1.2.acc") == 0.9
    assert resolve_metric(doc, "models.v1.acc") == 0.1


@pytest.mark.parametrize(
    ("path", "match"),
    [
        ("models.hardend.clean_accuracy", r"no key 'hardend' under 'models' \(keys: baseline"),
        ("nope", "no key 'nope' under the top level"),
        ("models.hardened.accuracy_vs_eps.worst_case.7", "out of range"),
        ("models.hardened.accuracy_vs_eps.worst_case.last", "expected an integer index"),
        ("models.hardened.clean_accuracy.x", "is a float, not a mapping or list"),
    ],
)
def test_resolve_says_where_it_stopped(scorecard: dict[str, Any], path: str, match: str) -> None:
    with pytest.raises(MetricNotFound, match=match):
        resolve_metric(scorecard, path)
