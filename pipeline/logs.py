"""How much the ``ccgpt`` command prints: its own progress, summary, warnings and errors, and nothing else.

A user running ``ccgpt run`` or ``make demo`` wants to see what ccgpt is doing, not the start-up chatter of
the libraries it drives: Beam's SDK workers alone log a dozen ``INFO`` lines per worker and stage, gRPC,
Airflow, matplotlib, absl and urllib3 add theirs. So by default ccgpt's own loggers (``ccgpt``, ``pipeline``,
``train``, ``schemas``, ``dags``) log at ``INFO`` and every other logger at ``WARNING``; ``--verbose`` puts
everything back at ``INFO``. Warnings and errors always show.

Beam's local runner starts its SDK workers as separate processes (``running_mode: multi_processing``) that
set up their own logging to the inherited stderr, out of reach of this process's configuration. When the
command is quiet, :func:`pipeline.runner.make_pipeline` starts those workers through this module instead
(``python -m pipeline.logs LEVEL``), which caps their stderr at the same level before Beam's worker starts.
Code that does not go through the ``ccgpt`` command (the Airflow DAG, tests, a notebook) keeps its own
logging configuration and Beam's own workers: an Airflow task log shows everything.
"""

from __future__ import annotations

import logging
import os
import sys

OWN_LOGGERS = ("ccgpt", "pipeline", "train", "schemas", "dags")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# the level Beam's worker processes log at when this process made the command quiet; None: Beam's own workers
_worker_level: int | None = None


class _BeamNoise(logging.Filter):
    """Two warnings Beam gives on every run that ask nothing of a ccgpt user, dropped even with ``--verbose``:

    * on import, that the optional GCP client libraries are absent: ccgpt needs them only on Dataflow
      (``pip install apache-beam[gcp]``);
    * from every local worker process (and again as the runner relays it), that it has no staging folder for
      a pickled main session: ccgpt never pickles one (``save_main_session=False``).
    """

    NOISE = ("apitools not found", "No semi_persistent_directory found")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(n in message for n in self.NOISE)


def setup_logging(verbose: bool = False) -> None:
    """Configure this process's logging for the ``ccgpt`` command (see the module docstring)."""
    global _worker_level
    logging.basicConfig(level=logging.INFO, format=FORMAT)
    root = logging.getLogger()
    for handler in root.handlers:
        handler.addFilter(_BeamNoise())
    if verbose:
        _worker_level = None
        return
    root.setLevel(logging.WARNING)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    # gRPC's C core logs through its own channel (absl), read from the environment when grpc loads
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    _worker_level = logging.WARNING


def worker_command() -> str | None:
    """The command Beam's local runner should start its worker processes with, or None for Beam's own."""
    if _worker_level is None:
        return None
    return f"{sys.executable} -m pipeline.logs {logging.getLevelName(_worker_level)}"


def _worker_main(level: str) -> None:
    """A Beam SDK worker process whose stderr shows records of ``level`` and above.

    Beam's worker raises the root logger to ``INFO`` while it starts and sends every record both to stderr
    and to the runner; the level is set on the stderr handler, so what the runner receives is unchanged.
    """
    handler = logging.StreamHandler()
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(_BeamNoise())
    logging.getLogger().addHandler(handler)
    from apache_beam.runners.worker import sdk_worker_main

    sdk_worker_main.main(sys.argv)


if __name__ == "__main__":
    _worker_main(sys.argv[1] if len(sys.argv) > 1 else "WARNING")
