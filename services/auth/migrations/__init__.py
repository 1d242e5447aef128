"""The auth store's schema revisions (Alembic), run at start by qruntime_kit.migrations; one module each."""
