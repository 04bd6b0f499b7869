"""The information-budget extraction monitor: answer bits, the coverage reference on real
digits, calibration, the harmonic discount, and the monitor inside the service."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from serve_fixtures import digits_test_images

from bastion.data.digits import load_digits_dataset
from bastion.errors import ConfigError
from bastion.serve import ServeSettings
from bastion.serve.budget import (
    BudgetMonitor,
    CoverageReference,
    answer_bits,
    calibrate_threshold,
)
from conftest import MakeServed


@pytest.fixture(scope="module")
def train() -> tuple[np.ndarray, np.ndarray]:
    data = load_digits_dataset(seed=0)
    return data.train.x.numpy(), data.train.y.numpy()


@pytest.fixture(scope="module")
def reference(train: tuple[np.ndarray, np.ndarray]) -> CoverageReference:
    return CoverageReference.fit(*train, cells_per_class=5, seed=0)


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    return digits_test_images()


def test_answer_bits_order_labels_below_top_k_below_probabilities() -> None:
    assert answer_bits(10, kind="label") == pytest.approx(math.log2(10))
    top1 = answer_bits(10, kind="top_k", k=1, decimals=2)
    assert top1 == pytest.approx(math.log2(10) + math.log2(101))
    top3 = answer_bits(10, kind="top_k", k=3, decimals=2)
    rounded = answer_bits(10, kind="probabilities", decimals=2)
    full = answer_bits(10)
    assert math.log2(10) < top1 < top3 < rounded < full
    assert rounded == pytest.approx(9 * math.log2(101))
    for bad, field in (
        ({"kind": "softmax"}, "kind"),
        ({"kind": "top_k", "k": 11}, "k"),
        ({"decimals": -1}, "decimals"),
    ):
        with pytest.raises(ConfigError, match=rf"answer_bits\.{field}"):
            answer_bits(10, **bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="num_classes"):
        answer_bits(1)


def test_reference_cells_follow_the_classes_of_real_digits(
    reference: CoverageReference, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    assert reference.cells == 50 and reference.features == 64
    assert sorted(set(reference.cell_class.tolist())) == list(range(10))
    x, y = digits
    cells = reference.assign(x.reshape(len(x), -1))
    # held-out digits land in a cell fitted on their own class far more often than chance
    assert float((reference.cell_class[cells] == y).mean()) > 0.85
    assert len(set(cells.tolist())) >= 40  # the test split spreads over the cells


def test_reference_round_trips_and_bad_files_name_the_setting(
    reference: CoverageReference, train: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    path = tmp_path / "ref.safetensors"
    reference.save(path)
    back = CoverageReference.load(path)
    np.testing.assert_array_equal(back.centroids, reference.centroids)
    np.testing.assert_array_equal(back.cell_class, reference.cell_class)
    again = CoverageReference.fit(*train, cells_per_class=5, seed=0)
    np.testing.assert_array_equal(again.centroids, reference.centroids)  # seeded
    with pytest.raises(ConfigError, match=r"serve\.extraction_reference: no file"):
        CoverageReference.load(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError, match=r"serve\.extraction_reference"):
        CoverageReference.load(junk)
    with pytest.raises(ConfigError, match=r"coverage\.data"):
        CoverageReference.fit(train[0], train[1][:5])
    with pytest.raises(ConfigError, match=r"coverage\.cells_per_class"):
        CoverageReference.fit(*train, cells_per_class=0)
    with pytest.raises(ConfigError, match="features"):
        reference.assign(np.zeros((2, 10), dtype=np.float32))


def test_calibration_flags_at_most_the_given_share_of_normal_keys() -> None:
    scores = np.random.default_rng(0).lognormal(3.0, 1.0, size=1000)
    for rate in (0.0, 0.01, 0.05):
        t = calibrate_threshold(scores, max_flag_rate=rate)
        flagged = int((scores > t).sum())
        assert flagged <= rate * len(scores)
        assert flagged >= rate * len(scores) - 1  # and not needlessly fewer
    assert calibrate_threshold([1.0, 2.0, 3.0], max_flag_rate=0.0) == 3.0
    # with another monitor's flags: the union stays within the rate
    elsewhere = np.random.default_rng(1).random(1000) < 0.004
    t = calibrate_threshold(scores, max_flag_rate=0.01, flagged_elsewhere=elsewhere)
    union = (scores > t) | elsewhere
    assert 9 <= int(union.sum()) <= 10 and int((scores > t).sum()) > int(elsewhere.sum()) - 1
    assert t > calibrate_threshold(scores, max_flag_rate=0.01)  # stricter than alone
    too_many = np.ones(1000, dtype=bool)
    assert calibrate_threshold(scores, flagged_elsewhere=too_many) == scores.max()
    with pytest.raises(ConfigError, match="flagged_elsewhere"):
        calibrate_threshold(scores, flagged_elsewhere=[True])
    with pytest.raises(ConfigError, match="max_flag_rate"):
        calibrate_threshold(scores, max_flag_rate=1.0)
    with pytest.raises(ConfigError, match="scores"):
        calibrate_threshold([])


def test_repeats_are_discounted_harmonically_and_sweeps_cost_more(
    reference: CoverageReference, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = digits
    flat = x.reshape(len(x), -1)
    bits = answer_bits(10, kind="label")
    monitor = BudgetMonitor(threshold=1e9, reference=reference)
    status = monitor.observe("repeat", np.repeat(flat[:1], 20, axis=0), bits)
    assert status.score == pytest.approx(bits * sum(1.0 / k for k in range(1, 21)))
    assert status.queries == 20 and status.coverage == pytest.approx(1 / 50)
    # the same volume: one class of digits against a sweep over all classes
    ones = flat[y == 1][:30]
    sweep = flat[np.random.default_rng(0).permutation(len(flat))[:30]]
    narrow = monitor.observe("narrow", ones, bits)
    wide = monitor.observe("wide", sweep, bits)
    assert wide.score > 2 * narrow.score and wide.coverage > 3 * narrow.coverage
    # without a reference every answer is charged in full
    plain = BudgetMonitor(threshold=100.0).observe("k", flat[:40], bits)
    assert plain.score == pytest.approx(40 * bits) and plain.flagged and plain.newly_flagged
    with pytest.raises(ConfigError, match=r"serve\.extraction_budget_bits"):
        BudgetMonitor(threshold=0.0)


def _normal_key_queries(
    x: np.ndarray, y: np.ndarray, rng: np.random.Generator, n: int
) -> np.ndarray:
    """A normal client: ``n`` test digits from a client-specific mix of two classes."""
    classes = rng.choice(10, size=2, replace=False)
    pool = np.flatnonzero(np.isin(y, classes))
    return x[rng.choice(pool, size=n)]


def test_service_flags_a_sweeping_key_not_normal_ones(
    make_served: MakeServed,
    reference: CoverageReference,
    digits: tuple[np.ndarray, np.ndarray],
    tmp_path: Path,
) -> None:
    x, y = digits
    bits = answer_bits(10, kind="label")  # the service's default charge per answer
    # calibrate on a replay of 200 simulated normal keys (the offline step of the docs)
    rng = np.random.default_rng(0)
    replay = BudgetMonitor(threshold=1e12, reference=reference)
    scores = [
        replay.observe(f"n{i}", _normal_key_queries(x, y, rng, 40).reshape(40, -1), bits).score
        for i in range(200)
    ]
    threshold = calibrate_threshold(scores, max_flag_rate=0.01)
    path = tmp_path / "ref.safetensors"
    reference.save(path)
    s = make_served(
        rate=None,
        extraction_check=False,  # this test is about the budget alone
        extraction_budget_bits=threshold,
        extraction_reference=str(path),
        flagged_rate=0.01,
        flagged_burst=40,
    )
    _, normal_key = s.keys.create("normal")
    for batch in np.split(_normal_key_queries(x, y, np.random.default_rng(7), 40), 4):
        r = s.client.post(
            "/v1/predict", json={"inputs": batch.tolist()}, headers={"X-API-Key": normal_key}
        )
        assert r.status_code == 200 and {p["verdict"] for p in r.json()["predictions"]} == {
            "accept"
        }
    order = np.random.default_rng(1).permutation(len(x))
    flagged_reply, sent = None, 0
    for i in range(0, len(order), 20):
        r = s.client.post(
            "/v1/predict", json={"inputs": x[order[i : i + 20]].tolist()}, headers=s.auth
        )
        if r.status_code == 429:  # throttled to the flagged rate
            break
        sent += 20
        if any(p["verdict"] == "flag" for p in r.json()["predictions"]):
            flagged_reply = r.json()
            break
    assert flagged_reply is not None, "the sweeping key was never flagged"
    assert sent <= 200  # well before it had swept the whole test split
    pred = flagged_reply["predictions"][0]
    assert any(reason.startswith("extraction: information budget") for reason in pred["reasons"])
    assert pred["scores"]["budget_bits"] > threshold
    audited = s.audit.by_request(flagged_reply["request_id"])
    assert audited and all(rec.verdict == "flag" and rec.key_name == "alice" for rec in audited)
    metrics = s.client.get("/metrics").text.splitlines()
    assert "bastion_extraction_budget_flags_total 1" in metrics
    assert "bastion_extraction_flags_total 0" in metrics  # PRADA was off
    assert "bastion_flagged_keys 1" in metrics


def test_budget_settings_name_the_field() -> None:
    for bad in (0, -3.0, float("nan"), True):
        with pytest.raises(ConfigError, match=r"serve\.extraction_budget_bits"):
            ServeSettings(extraction_budget_bits=bad)  # type: ignore[arg-type]
    assert ServeSettings(extraction_budget_bits=500).extraction_budget_bits == 500


def test_a_reference_of_other_inputs_is_refused_when_the_app_is_built(
    make_served: MakeServed, tmp_path: Path
) -> None:
    rng = np.random.default_rng(0)
    other = CoverageReference.fit(rng.random((40, 10)), np.arange(40) % 2, cells_per_class=2)
    path = tmp_path / "other.safetensors"
    other.save(path)
    expected = r"serve\.extraction_reference: .* 10 features, the served model takes 64"
    with pytest.raises(ConfigError, match=expected):
        make_served(extraction_budget_bits=100.0, extraction_reference=str(path))
