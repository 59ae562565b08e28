"""Keeping a long-running process's startup heap out of Python's full garbage collections.

A portal process holds millions of objects that live as long as it does: the embedding model and the libraries
behind it (torch, transformers), SQLAlchemy's mappers, the templates, the web framework. CPython's cyclic collector
walks all of them on every full (generation 2) collection; measured here with the model loaded, one such pass
held the interpreter for 260-300 ms, and full passes come every few seconds while a document is indexed or many
answers stream. Everything in that pass stops: each streaming answer's next token waits behind it.

`gc.freeze()` moves every object alive at that moment into a permanent generation the collector never walks, so
later full passes only look at what was made since. That is done twice: once the application is built, and once
the embedding model has loaded (it loads in the background, after the server has started). Garbage is collected
first, so nothing unreachable is frozen. Reference counting still frees frozen objects that are dropped; only
reference cycles among them would never be reclaimed, and these are objects that live for the whole process.

Only server and worker processes call `enable()`: test sessions build and drop many applications in one process,
and must not keep them.
"""

from __future__ import annotations

import gc
import threading

_enabled = False
_lock = threading.Lock()


def enable() -> None:
    """This process is a long-running server or worker: `settle()` freezes from now on."""
    global _enabled
    _enabled = True


def settle() -> bool:
    """Collect garbage, then freeze everything still alive out of later full collections. True when done (only in a
    process that called `enable()`)."""
    if not _enabled:
        return False
    with _lock:
        gc.collect()
        gc.freeze()
    return True
