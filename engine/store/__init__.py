"""The only room that opens or writes a store: SQL tables (``db``, split by concern, and ``schema``), objects
(``objects``), and opening or checking both (``opening``)."""

from .db import Database, NothingStored, StoreError, StoreLost, StoreUnreachable, redact
from .objects import (
    LocalObjectStore,
    ObjectStore,
    S3ObjectStore,
    face_key,
    frame_key,
    open_object_store,
    open_s3_bucket,
    video_key,
)
from .opening import check_database, check_object_store, open_stores

__all__ = [
    "Database",
    "LocalObjectStore",
    "NothingStored",
    "ObjectStore",
    "S3ObjectStore",
    "StoreError",
    "StoreLost",
    "StoreUnreachable",
    "check_database",
    "check_object_store",
    "face_key",
    "frame_key",
    "open_object_store",
    "open_s3_bucket",
    "open_stores",
    "redact",
    "video_key",
]
