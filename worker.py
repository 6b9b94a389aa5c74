"""`python worker.py` starts a worker, like `hub worker`."""

from hub.cli import main

if __name__ == "__main__":
    main(["worker"])
