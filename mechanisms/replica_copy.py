"""Copy one bucket replica to another store, make-before-break, verifying every object's checksum.

A replica's state lives in the store itself, in a marker object (`MARKER_KEY`): `copying` while objects
are being copied, `complete` once every object has been copied and read back with the same SHA-256.
Only `complete` replicas serve reads or count as copies, so a copy that fails midway (store killed,
network gone, checksum mismatch) never replaces anything: the old replica is removed only after the new
one is complete, by the caller. Synchronous (boto3): run it in a thread.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mlsysops.substrates.s3.client import S3Site, StoreError

MARKER_KEY = ".mlsysops/replica.json"


class ChecksumMismatch(RuntimeError):
    pass


@dataclass
class CopyProgress:
    bucket: str
    source: str
    target: str
    total: int = 0
    copied: int = 0
    bytes: int = 0
    started: float = field(default_factory=time.time)


def read_marker(store: S3Site, bucket: str) -> dict[str, object] | None:
    """The replica marker, or None when the bucket or the marker is absent (not a managed replica)."""
    try:
        return json.loads(store.get(bucket, MARKER_KEY))
    except StoreError as exc:
        if exc.missing:
            return None
        raise
    except ValueError:
        return {"state": "corrupt"}


def write_marker(store: S3Site, bucket: str, app: str, bucket_id: str, state: str) -> None:
    store.put(bucket, MARKER_KEY, json.dumps({"app": app, "bucket": bucket_id, "state": state,
                                              "since": time.time()}).encode())


def user_objects(store: S3Site, bucket: str) -> list:
    return [o for o in store.objects(bucket) if not o.key.startswith(".mlsysops/")]


def copy_replica(source: S3Site, target: S3Site, bucket: str, app: str, bucket_id: str,
                 progress: CopyProgress, on_object: Callable[[CopyProgress], None] | None = None) -> None:
    """Create the bucket on `target`, copy and verify every object of `source`, then mark it complete.
    A second pass re-copies what changed on the source meanwhile (a write during the copy)."""
    target.create_bucket(bucket)
    write_marker(target, bucket, app, bucket_id, "copying")
    copied: dict[str, str] = {}
    for _ in range(3):
        pending = [o for o in user_objects(source, bucket) if copied.get(o.key) != o.etag]
        if not pending:
            break
        progress.total = len(copied) + len(pending)
        for obj in pending:
            data = source.get(bucket, obj.key)
            digest = hashlib.sha256(data).hexdigest()
            target.put(bucket, obj.key, data)
            if hashlib.sha256(target.get(bucket, obj.key)).hexdigest() != digest:
                raise ChecksumMismatch(f"{bucket}/{obj.key}: checksum differs on {target.site} after the copy")
            copied[obj.key] = obj.etag
            progress.copied = len(copied)
            progress.bytes += len(data)
            if on_object is not None:
                on_object(progress)
    else:
        raise StoreError(source.site, f"copy {bucket}", "the source kept changing during three passes")
    write_marker(target, bucket, app, bucket_id, "complete")


def discard_partial(target: S3Site, bucket: str) -> str | None:
    """Best effort after a failed copy: delete what was copied. Returns why it could not (the marker
    still says `copying`, so the leftover never counts as a replica and the next attempt overwrites it)."""
    try:
        target.delete_bucket(bucket)
    except StoreError as exc:
        return str(exc)
    return None
