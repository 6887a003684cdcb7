"""Python client of taskforge.

- :class:`Client` — async REST client (submit, get, wait, cancel, list, replay, ...), configured
  by ``TASKFORGE_API_URL`` (default ``http://127.0.0.1:8080``) and ``TASKFORGE_API_TOKEN``;
- :func:`enqueue` — insert a job inside the caller's own asyncpg transaction: the job exists
  only if the caller commits;
- :mod:`.cli` — ``taskforge jobs|dlq|queues`` on top of :class:`Client`.
"""

from taskforge.client.enqueue import enqueue, init_connection
from taskforge.client.rest import Client, TaskforgeError

__all__ = ["Client", "TaskforgeError", "enqueue", "init_connection"]
