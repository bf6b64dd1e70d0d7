"""The MongoDB `packages` collection (Cosmos DB for MongoDB in production), through pymongo.

Documents: `_id` = package id (str), `tag` = shard key, as in the reference's Package service.
Only what Cosmos DB for MongoDB supports: single-document writes, upserts, finds by `_id` and
by indexed fields.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import pymongo
from django.conf import settings
from pymongo.collection import Collection

_clients: dict[tuple[int, str], pymongo.MongoClient[dict[str, Any]]] = {}
_lock = threading.Lock()


def mongo_client() -> pymongo.MongoClient[dict[str, Any]]:
    # One client per process and URI: MongoClient is thread-safe but not fork-safe, and Celery's
    # prefork pool forks after import.
    key = (os.getpid(), settings.MONGODB_URI)
    client = _clients.get(key)
    if client is None:
        with _lock:
            client = _clients.get(key)
            if client is None:
                client = pymongo.MongoClient(
                    settings.MONGODB_URI,
                    serverSelectionTimeoutMS=settings.MONGODB_TIMEOUT_MS,
                    connectTimeoutMS=settings.MONGODB_TIMEOUT_MS,
                    socketTimeoutMS=10000,
                    retryWrites=True,
                    tz_aware=True,
                )
                _clients[key] = client
    return client


def packages_collection() -> Collection[dict[str, Any]]:
    return mongo_client()[settings.MONGODB_DATABASE]["packages"]


def packages_indexes_ensure() -> None:
    collection = packages_collection()
    collection.create_index("tag")
    collection.create_index("business_id")
