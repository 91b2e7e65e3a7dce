"""Opening the stores: the one place the engine connects its database and object store, or checks they answer.

Everything here takes plain URLs (``Settings.db_url``, ``.store_url``, ``.s3_endpoint_url``), so this room needs
nothing from the rest of the engine.
"""

from __future__ import annotations

from .db import Database
from .objects import ObjectStore, open_object_store


def open_stores(db_url: str, store_url: str, s3_endpoint_url: str | None = None) -> tuple[Database, ObjectStore]:
    """Connect to the database and the object store, or raise ``StoreUnreachable`` with one clear line."""
    db = Database(db_url).connect()
    store = open_object_store(store_url, s3_endpoint_url)
    store.check()
    return db, store


def check_database(db_url: str) -> None:
    """Connect (creating missing tables) and let go at once; raise ``StoreUnreachable`` if it does not answer."""
    Database(db_url).connect().dispose()


def check_object_store(store_url: str, s3_endpoint_url: str | None = None) -> None:
    """Open the object store and check it is usable (``StoreUnreachable``; ``ValueError`` for a bad URL)."""
    open_object_store(store_url, s3_endpoint_url).check()
