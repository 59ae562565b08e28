"""The model's answer asked for before any stream has claimed the turn, kept until this process's stream takes it.

The process that saves a question also finds its passages and builds its prompt while the page opens the answer's
stream (see `PreparedTurn`). It then asks the model at once: the answer's pieces wait here, in order, until a stream
served by this process claims the turn and adopts them. Nothing is shown or saved from here: the stream that adopts
the answer shows it only once its claim is won, like an answer it asked for itself. Not adopted within the deadline
(the stream went to another process, or never came), the request is cancelled, which closes the model's stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from rag.llm import LLMError, StreamUsage
from rag.prompt import PromptPlan
from rag.types import SearchHit

Piece = str | StreamUsage


@dataclass(frozen=True)
class _Failed:
    error: Exception


class EarlyAnswer:
    """One model request started early: its prompt, the passages the prompt was built from, and its pieces."""

    def __init__(
        self, plan: PromptPlan, hits: list[SearchHit], checked: bool, stream: AsyncGenerator[Piece, None], deadline_s: float
    ) -> None:
        self.plan, self.hits = plan, hits
        self.checked = checked  # True: `hits` already passed the version check
        self._queue: asyncio.Queue[Piece | _Failed | None] = asyncio.Queue()
        self._adopted = self._cancelled = False
        self._task = asyncio.create_task(self._pump(stream), name="chat-early-answer")
        self._timer = asyncio.get_running_loop().call_later(deadline_s, self.cancel)

    async def _pump(self, stream: AsyncGenerator[Piece, None]) -> None:
        try:
            async with contextlib.aclosing(stream):
                async for piece in stream:
                    self._queue.put_nowait(piece)
        except asyncio.CancelledError:
            # A reader still waiting (only at shutdown) gets a failed answer, not an endless wait.
            self._queue.put_nowait(_Failed(LLMError("the early model request was cancelled")))
            raise
        except Exception as exc:  # noqa: BLE001 - handed to the stream that adopts the answer, raised there
            self._queue.put_nowait(_Failed(exc))
        self._queue.put_nowait(None)

    def adopt(self) -> AsyncGenerator[Piece, None] | None:
        """The answer's pieces (the model's stream, as `LLMClient.stream_chat` yields it), once; None when it was
        cancelled meanwhile (the caller asks the model itself). Closing the iterator stops the model's request."""
        if self._adopted or self._cancelled:
            return None
        self._adopted = True
        self._timer.cancel()
        return self._pieces()

    async def _pieces(self) -> AsyncGenerator[Piece, None]:
        try:
            while (item := await self._queue.get()) is not None:
                if isinstance(item, _Failed):
                    raise item.error
                yield item
        finally:
            self._task.cancel()  # the reader left early (Stop, a lost claim, a cut connection): stop the model

    def cancel(self) -> None:
        """Stop the model's request (a no-op once it finished); an answer not adopted yet can no longer be."""
        self._cancelled = True
        self._timer.cancel()
        self._task.cancel()

    @property
    def adopted(self) -> bool:
        return self._adopted

    @property
    def finished(self) -> bool:
        """The model's request has ended (answered, failed or cancelled)."""
        return self._task.done()


def cancel_early(asking: asyncio.Task[EarlyAnswer | None]) -> None:
    """Stop an early answer wherever it stands: still being asked for, or asked for and not taken."""
    if not asking.done():
        asking.cancel()
    elif not asking.cancelled() and asking.exception() is None and (early := asking.result()) is not None:
        early.cancel()
