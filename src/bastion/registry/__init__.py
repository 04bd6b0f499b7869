"""The run registry: every run recorded in a database, compared, traced, promoted and rolled back.

- :mod:`bastion.registry.db`: where the registry is, connecting, Alembic migrations on open.
- :mod:`bastion.registry.record`: what is recorded about a run directory or a model file.
- :mod:`bastion.registry.store`: :class:`~bastion.registry.store.Registry` (record, get, list,
  lineage).
- :mod:`bastion.registry.diff`: two runs side by side, regressions marked.
- :mod:`bastion.registry.stages`: promotion through the gate, rollback.
- :mod:`bastion.registry.risks`: the risk register, judged against a run's scorecard.
- :mod:`bastion.registry.commands`: the command line.

Nothing is imported here, so that ``bastion --help`` does not load SQLAlchemy. See
docs/registry.md.
"""
