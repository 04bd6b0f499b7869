"""Makes tests/ importable (``shared_data``: where the real data sets are) for every test."""
