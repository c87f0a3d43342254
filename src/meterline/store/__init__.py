"""The store adapter: SQLAlchemy Core on SQLite (embedded) and PostgreSQL.

Facts are appended, never updated: events, retractions, quarantine and
catalog versions. `knowledge.seq` numbers every fact in commit order.
"""
