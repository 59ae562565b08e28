"""Records requests: the export holds exactly one person's data (conversations, cited passages, access log)."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from portal.audit import AuditContext, append_audit
from portal.db.engine import transaction
from portal.db.models import AuditEvent, Citation, Collection, Document, DocumentChunk, Message
from portal.governance.breakglass import break_glass_read
from portal.governance.records import build_records_export
from tests.governance.conftest import ADMIN_CTX, T0, add_conversation, add_user


async def _cited_answer(factory: async_sessionmaker[AsyncSession], conversation_id: str, passage: str) -> str:
    async with transaction(factory) as session:
        collection = Collection(name=f"c-{passage[:10]}")
        session.add(collection)
        await session.flush()
        document = Document(collection_id=collection.id, title=f"Doc {passage[:10]}", filename="d.txt", content_hash="h")
        session.add(document)
        await session.flush()
        chunk = DocumentChunk(id=f"{document.id}:0", document_id=document.id, ordinal=0, text=passage, content_hash="h")
        answer = Message(conversation_id=conversation_id, role="assistant", content=f"answer citing {passage}",
                         created_at=T0 + timedelta(seconds=1))
        session.add_all([chunk, answer])
        await session.flush()
        session.add(Citation(message_id=answer.id, ordinal=1, chunk_id=chunk.id, document_id=document.id,
                             collection_id=collection.id, cited=True))
        return document.id


def _ctx(user_id: str) -> AuditContext:
    return AuditContext(user_id=user_id, roles=("teacher",), session_hash="h" * 64, client_addr="10.1.1.1")


async def test_export_contains_exactly_that_persons_data(factory: async_sessionmaker[AsyncSession]) -> None:
    alice = await add_user(factory, "alice", "teacher")
    bob = await add_user(factory, "bob", "teacher")
    alice_conv = await add_conversation(factory, alice, text="alice asks about fractions")
    bob_conv = await add_conversation(factory, bob, text="bob asks about volcanoes")
    await _cited_answer(factory, alice_conv, "Fractions are parts of a whole.")
    await _cited_answer(factory, bob_conv, "Volcanoes erupt magma.")
    async with transaction(factory) as session:
        await append_audit(session, at=T0, action="question", context=_ctx(alice), object_ids=[alice_conv])
        await append_audit(session, at=T0, action="question", context=_ctx(bob), object_ids=[bob_conv])
    async with transaction(factory) as session:  # an admin reads Alice's conversation: part of her access log
        await break_glass_read(session, conversation_id=alice_conv, reason="safeguarding concern raised",
                               actor=ADMIN_CTX, now=T0 + timedelta(hours=1), notify_owner=True)

    async with transaction(factory) as session:
        export = await build_records_export(session, user_id=alice, actor=ADMIN_CTX, now=T0 + timedelta(hours=2),
                                            requested_by="admin")
    archive = zipfile.ZipFile(io.BytesIO(export.content))
    assert sorted(archive.namelist()) == ["README.txt", "access_log.json", "conversations.json", "index.html", "person.json"]
    everything = "\n".join(archive.read(name).decode() for name in archive.namelist())
    assert "alice asks about fractions" in everything and "Fractions are parts of a whole." in everything
    for other in ("bob", bob, bob_conv, "volcanoes", "Volcanoes erupt magma."):
        assert other not in everything
    conversations = json.loads(archive.read("conversations.json"))
    assert [c["id"] for c in conversations] == [alice_conv]
    answer = conversations[0]["messages"][1]
    assert answer["passages"][0]["text"] == "Fractions are parts of a whole." and answer["passages"][0]["cited_in_answer"]
    log = json.loads(archive.read("access_log.json"))
    assert [e["action"] for e in log] == ["question", "breakglass.read", "records.exported"]
    assert json.loads(archive.read("person.json"))["email"] == "alice@example.org"
    html = archive.read("index.html").decode()
    assert "<h1>Records of alice</h1>" in html and "Reason given: safeguarding concern raised" in html
    async with factory() as session:
        exported = (await session.execute(select(AuditEvent).where(AuditEvent.action == "records.exported"))).scalars().one()
    assert exported.object_ids == [alice] and exported.detail["requested_by"] == "admin"


async def test_html_page_escapes_what_people_typed(factory: async_sessionmaker[AsyncSession]) -> None:
    mallory = await add_user(factory, "mallory", "student")
    await add_conversation(factory, mallory, text="<script>alert(1)</script>")
    async with transaction(factory) as session:
        export = await build_records_export(session, user_id=mallory, actor=_ctx(mallory), now=T0, requested_by="self")
    html = zipfile.ZipFile(io.BytesIO(export.content)).read("index.html").decode()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
