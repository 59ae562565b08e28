"""Background indexing: jobs persisted in ingestion_jobs, run by in-process workers or `enclave worker` (SAQ)."""
