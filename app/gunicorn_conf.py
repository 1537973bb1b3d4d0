"""gunicorn settings that need code (``sensei serve`` passes ``--config python:app.gunicorn_conf``).

Prometheus multiprocess mode: each worker writes its metrics to files under
``PROMETHEUS_MULTIPROC_DIR`` (which ``sensei serve`` empties and sets before gunicorn
starts); a worker that exits has its live gauges dropped.
"""

from app.metrics import worker_exited


def child_exit(server, worker) -> None:
    worker_exited(worker.pid)
