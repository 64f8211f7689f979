"""Child process for the crash test: upsert in batches, SIGKILL itself after `kill_after` batches.

argv: backend location model dim n batch_size kill_after version
(kill_after 0: never kill itself; the parent kills it at a moment of its choosing)
"""

from __future__ import annotations

import os
import signal
import sys

from qpipe_dagster.store import open_store
from qpipe_dagster_tests.store.store_testdata import make_objects


def main() -> None:
    backend, location, model, dim, n, batch_size, kill_after, version = sys.argv[1:9]
    kw = {"weaviate_url": location} if backend == "weaviate" else {"lance_path": location}
    if backend == "weaviate":
        kw["weaviate_api_key"] = os.environ.get("WEAVIATE_API_KEY")
    store = open_store(model=model, dim=int(dim), batch_size=int(batch_size), **kw)
    batches = 0

    def progress(_counts) -> None:
        nonlocal batches
        batches += 1
        if batches == int(kill_after):
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no flush: a real crash

    store.upsert(make_objects("crash", int(n), int(dim), version=version), progress=progress)
    sys.exit(3)  # reaching here means no kill happened before the end


if __name__ == "__main__":
    main()
