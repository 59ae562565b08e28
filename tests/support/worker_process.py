"""`python -m tests.support.worker_process`: what `enclave worker` runs, for machines without a Qdrant server.

`enclave worker` refuses to start on the embedded vector store (Qdrant Edge): an Edge shard is one directory
that one process locks, so a separate worker's vectors would be invisible to the portals. That refusal is
right in production. CI's machine has PostgreSQL and Redis but no Qdrant server, so the multi-process tests
run the SAME worker code (portal.jobs.saq_worker.build_worker: SAQ on Redis, progress in PostgreSQL) in a
separate process with an Edge shard of its own (ENCLAVE_QDRANT_COLLECTION names it). They check progress,
which lives in the database, not search. With ENCLAVE_TEST_QDRANT_URL set they run `enclave worker` itself.
"""

from __future__ import annotations

import asyncio


async def serve() -> None:
    from portal.jobs.saq_worker import build_worker
    from portal.logging import configure_logging
    from portal.runtime import Runtime
    from portal.settings import load_settings

    configure_logging()
    runtime = Runtime.create(load_settings(workers=0))
    await runtime.start()
    if runtime.store is None:
        raise SystemExit(f"the vector store could not be opened ({runtime.store_error})")
    worker = build_worker(runtime)
    print("test worker: taking jobs from the SAQ queue", flush=True)
    try:
        await worker.start()
    finally:
        await worker.queue.disconnect()
        await runtime.stop()


if __name__ == "__main__":
    asyncio.run(serve())
