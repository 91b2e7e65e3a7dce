"""The only room that writes: SQL tables (``db``, ``schema``) and objects (``objects``)."""

from .db import Database, StoreUnreachable, redact
from .objects import LocalObjectStore, ObjectStore, S3ObjectStore, face_key, frame_key, open_object_store, video_key

__all__ = [
    "Database",
    "LocalObjectStore",
    "ObjectStore",
    "S3ObjectStore",
    "StoreUnreachable",
    "face_key",
    "frame_key",
    "open_object_store",
    "redact",
    "video_key",
]
