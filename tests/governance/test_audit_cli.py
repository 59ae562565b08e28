"""`enclave audit verify` through the real command: intact exits 0; one updated, deleted or reordered row is
caught, named, and never repaired. `enclave audit export` writes what the filters select. `enclave purge` runs."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select, update

from portal.audit import AuditContext, append_audit
from portal.db.engine import make_engine, make_session_factory, transaction
from portal.db.models import AuditEvent
from tests.governance.conftest import T0

ENCLAVE = [sys.executable, "-c", "from portal.cli import main; main()"]


def _enclave(database_url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ENCLAVE_DATABASE_URL": database_url, "ENCLAVE_DATA_DIR": str(tmp_path / "data")}
    return subprocess.run([*ENCLAVE, *args], env=env, capture_output=True, text=True, timeout=120)


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _write_chain(database_url: str, n: int = 6) -> None:
    engine = make_engine(database_url)
    factory = make_session_factory(engine)
    for i in range(n):
        ctx = AuditContext(user_id=f"u{i % 2}", roles=("nurse",), session_hash="s" * 64, client_addr="10.0.0.1")
        async with transaction(factory) as session:
            await append_audit(session, at=T0 + timedelta(days=i), action="question" if i % 2 else "sign_in",
                               context=ctx, object_ids=[f"c{i}"], outcome="denied" if i == 3 else "allowed")
    await engine.dispose()


async def _tamper(database_url: str, how: str) -> None:
    engine = make_engine(database_url)
    async with transaction(make_session_factory(engine)) as session:
        if how == "update":
            await session.execute(update(AuditEvent).where(AuditEvent.seq == 3).values(outcome="denied"))
        elif how == "delete":
            await session.execute(delete(AuditEvent).where(AuditEvent.seq == 3))
        else:  # reorder: records 3 and 4 swap places in the chain (each keeps its own hash and link)
            rows = {e.seq: e for e in (await session.execute(select(AuditEvent))).scalars()}
            three = {c: getattr(rows[3], c) for c in ("at", "user_id", "action", "object_ids", "outcome", "prev_hash", "hash")}
            four = {c: getattr(rows[4], c) for c in three}
            await session.execute(update(AuditEvent).where(AuditEvent.seq == 3).values(hash="t" * 64))
            await session.execute(update(AuditEvent).where(AuditEvent.seq == 4).values(**three))
            await session.execute(update(AuditEvent).where(AuditEvent.seq == 3).values(**four))
    await engine.dispose()


def test_an_intact_chain_verifies(database_url: str, tmp_path: Path) -> None:
    _run(_write_chain(database_url))
    result = _enclave(database_url, tmp_path, "audit", "verify")
    assert result.returncode == 0, result.stderr
    assert "intact: 6 records" in result.stdout


@pytest.mark.parametrize(
    ("how", "where"),
    [
        ("update", "record 3: content was modified"),
        ("delete", "records 3..3 are missing"),
        ("reorder", "record 3"),
    ],
)
def test_tampering_with_one_row_is_caught_and_named(database_url: str, tmp_path: Path, how: str, where: str) -> None:
    _run(_write_chain(database_url))
    _run(_tamper(database_url, how))
    result = _enclave(database_url, tmp_path, "audit", "verify")
    assert result.returncode == 1
    assert "BROKEN" in result.stderr and where in result.stderr
    if how == "reorder":
        assert "record 4" in result.stderr
    # Never repaired: a second run finds the same problems.
    again = _enclave(database_url, tmp_path, "audit", "verify")
    assert again.returncode == 1 and again.stderr == result.stderr


def test_export_writes_the_filtered_records_and_is_audited(database_url: str, tmp_path: Path) -> None:
    _run(_write_chain(database_url))
    out = tmp_path / "denied.jsonl"
    result = _enclave(database_url, tmp_path, "audit", "export", "--format", "jsonl", "--outcome", "denied",
                      "--output", str(out))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["seq"] for r in records] == [4]
    assert records[0]["outcome"] == "denied" and records[0]["hash"]
    csv_out = tmp_path / "u0.csv"
    result = _enclave(database_url, tmp_path, "audit", "export", "--format", "csv", "--user", "u0",
                      "--until", (T0 + timedelta(days=3)).date().isoformat(), "--output", str(csv_out))
    lines = csv_out.read_text().splitlines()
    assert lines[0].startswith("seq,at,user_id") and len(lines) == 3  # header + records 1 and 3
    verify = _enclave(database_url, tmp_path, "audit", "verify")
    assert verify.returncode == 0 and "intact: 8 records" in verify.stdout  # 6, and one record per export


def test_purge_command_runs_once_and_prints_its_receipt(database_url: str, tmp_path: Path) -> None:
    result = _enclave(database_url, tmp_path, "purge", "--open-embedded-store")
    assert result.returncode == 0, result.stderr
    receipt = json.loads(result.stdout)
    assert receipt["complete"] is True and receipt["batches"] == 0 and receipt["erasures_left_pending"] == 0
    # Without the flag the embedded store is left to the running portal, and the command says so.
    result = _enclave(database_url, tmp_path, "purge")
    assert result.returncode == 0 and "left to the portal" in result.stderr
