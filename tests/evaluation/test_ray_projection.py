"""The cluster projection of benchmarks/scale.py: shards scheduled longest first (Graham 1969)
plus each pass's measured overhead."""

from __future__ import annotations

import pytest

from bastion.evaluation.ray_runner import RayCall, lpt_makespan, project_seconds


def test_longest_first_makespan() -> None:
    assert lpt_makespan([3.0, 3.0, 2.0, 2.0, 2.0], 2) == 7.0  # 3+2+2 | 3+2 (optimum 6)
    assert lpt_makespan([5.0, 1.0, 1.0], 8) == 5.0  # never below the longest shard
    assert lpt_makespan([1.0] * 10, 3) == 4.0  # never below the total over the workers
    assert lpt_makespan([], 4) == 0.0
    with pytest.raises(ValueError, match="workers"):
        lpt_makespan([1.0], 0)


def test_projection_keeps_each_pass_overhead() -> None:
    shards = (2.0, 2.0, 2.0, 2.0)
    calls = [RayCall(wall_seconds=4.5, shard_examples=(50,) * 4, shard_seconds=shards)]
    # on 2 workers the shards take 4 s, so the pass spent 0.5 s elsewhere
    assert project_seconds(calls, 2, measured_workers=2) == pytest.approx(4.5)
    assert project_seconds(calls, 4, measured_workers=2) == pytest.approx(2.5)
    assert project_seconds(calls, 64, measured_workers=2) == pytest.approx(2.5)
    slow = [RayCall(wall_seconds=3.0, shard_examples=(50,) * 4, shard_seconds=shards)]
    assert project_seconds(slow, 4, measured_workers=2) == pytest.approx(2.0)  # no negative
    assert project_seconds(calls + calls, 4, measured_workers=2) == pytest.approx(5.0)
