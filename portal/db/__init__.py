"""Database layer: typed SQLAlchemy models and the async engine/session factory."""
