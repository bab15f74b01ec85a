"""Throwaway servers for the tests and the benchmark: PostgreSQL clusters, Redis servers and
``chatserver serve`` processes, each in its own process group or data directory, always
stopped and removed afterwards.

* `testinfra.procs`: spawn and stop process groups, wait for health, read /proc (CPU, memory,
  process trees, TCP sockets).
* `testinfra.postgres`: `PostgresServer`, an initdb + pg_ctl cluster (run as the ``postgres``
  OS user when root, which initdb and pg_ctl refuse).
* `testinfra.redis`: `RedisServer`, a ``redis-server`` without persistence.
* `testinfra.server`: `ServerProcess`, a ``chatserver serve`` process group.

The pytest fixtures built on these live in ``tests/servers.py``; ``bench`` uses them directly.
"""
