"""Drift monitoring: reference statistics, windowed tests, alerts, a printable JSON state."""

from __future__ import annotations

from bastion.monitor.drift import DriftMonitor, MonitorState, format_state
from bastion.monitor.reference import ReferenceStats

__all__ = ["DriftMonitor", "MonitorState", "ReferenceStats", "format_state"]
