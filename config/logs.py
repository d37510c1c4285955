"""Logging setup for entry points: one format for every process, so `make run` interleaves them readably."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    """Send log records at `level` and above to stderr; call once, from an entry point."""
    logging.basicConfig(level=level, format=FORMAT, datefmt="%H:%M:%S", stream=sys.stderr, force=True)


def log_tasks(logger: logging.Logger) -> None:
    """Log every pending asyncio task with the line it waits at (a process's SIGUSR1 handler).

    When a process that should have stopped is still idle, its threads all sit in the selector and only
    the tasks' own frames tell which await never completed.
    """
    import asyncio
    import io

    tasks = asyncio.all_tasks()
    logger.warning("%d asyncio tasks pending", len(tasks))
    for task in tasks:
        stack = io.StringIO()
        task.print_stack(limit=12, file=stack)
        logger.warning("%s", stack.getvalue().rstrip())
