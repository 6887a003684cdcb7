"""taskforge: distributed job processing on PostgreSQL and Redis Streams."""

__version__ = "0.1.0"
