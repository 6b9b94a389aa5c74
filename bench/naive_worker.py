"""`python -m bench.naive_worker REDIS_URL DATABASE_URL`: RQ's default forking worker in burst mode
on the naive queue.

Like any real worker it loads the job module and the database driver once at start-up; otherwise
every forked work-horse would import them again (psycopg alone costs about 0.1 s) and the
baseline would look worse than a naive design really is.
"""

from __future__ import annotations

import sys

from redis import Redis
from rq import Queue, Worker

from bench.naive import NAIVE_QUEUE  # also loads the job module for the work-horses
from hub.db import make_engine


def main(argv: list[str]) -> int:
    redis_url, database_url = argv
    make_engine(database_url).dispose()  # imports the driver; connects nothing
    connection = Redis.from_url(redis_url)
    worker = Worker([Queue(NAIVE_QUEUE, connection=connection)], connection=connection)
    worker.work(burst=True, logging_level="WARNING")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
