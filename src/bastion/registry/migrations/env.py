"""Alembic environment of the run registry.

bastion runs the migrations itself when it opens a registry
(:func:`bastion.registry.db.open_engine`), passing its connection in
``config.attributes["connection"]``. For developers writing a new revision with the alembic
command line, the database is the one named by ``BASTION_REGISTRY_URL``.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

from bastion.registry.models import Base

config = context.config
connection = config.attributes.get("connection")

if connection is not None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,
        transaction_per_migration=False,
    )
    context.run_migrations()
else:  # the alembic command line, for developers
    url = os.environ.get("BASTION_REGISTRY_URL")
    if not url:
        raise RuntimeError("set BASTION_REGISTRY_URL to the registry to migrate")
    engine = create_engine(url)
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=Base.metadata, render_as_batch=True)
        context.run_migrations()
    engine.dispose()
