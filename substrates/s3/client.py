"""A boto3 S3 client for one storage site, with short timeouts and one error type.

Synchronous (boto3 is): the storage mechanism calls it through `asyncio.to_thread`. Every failure to
reach or use the store becomes `StoreError(site, operation, detail)`, so a caller can say which store
failed at what, and nothing else leaks botocore types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

try:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError
except ImportError as exc:   # an optional dependency: say how to get it
    raise ImportError(f"the storage service needs boto3: pip install 'mlsysops[storage]' ({exc})") from exc


class StoreError(RuntimeError):
    def __init__(self, site: str, operation: str, detail: str, *, missing: bool = False) -> None:
        super().__init__(f"store {site}: {operation} failed: {detail}")
        self.site = site
        self.operation = operation
        self.detail = detail
        self.missing = missing     # the bucket or key does not exist (the store itself answered)


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str


class S3Site:
    def __init__(self, site: str, endpoint: str, access_key: str, secret_key: str, *, timeout: float = 5.0) -> None:
        self.site = site
        self.endpoint = endpoint
        self._client = boto3.client(
            "s3", endpoint_url=endpoint, aws_access_key_id=access_key, aws_secret_access_key=secret_key,
            region_name="us-east-1",
            config=Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 1},
                          s3={"addressing_style": "path"}))

    def _call(self, operation: str, fn: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._client, fn)(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            raise StoreError(self.site, operation, f"{code}: {exc.response.get('Error', {}).get('Message', exc)}",
                             missing=code in ("NoSuchBucket", "NoSuchKey", "404")) from exc
        except (BotoCoreError, OSError) as exc:
            raise StoreError(self.site, operation, f"unreachable at {self.endpoint} ({exc})") from exc

    def buckets(self) -> list[str]:
        return [b["Name"] for b in self._call("list buckets", "list_buckets").get("Buckets", [])]

    def create_bucket(self, bucket: str) -> None:
        if bucket not in self.buckets():
            self._call(f"create bucket {bucket}", "create_bucket", Bucket=bucket)

    def objects(self, bucket: str) -> list[ObjectInfo]:
        out, token = [], None
        while True:
            kw: dict[str, Any] = {"Bucket": bucket, **({"ContinuationToken": token} if token else {})}
            page = self._call(f"list {bucket}", "list_objects_v2", **kw)
            out += [ObjectInfo(o["Key"], int(o["Size"]), o.get("ETag", "").strip('"')) for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return out
            token = page.get("NextContinuationToken")

    def get(self, bucket: str, key: str) -> bytes:
        body = self._call(f"get {bucket}/{key}", "get_object", Bucket=bucket, Key=key)["Body"]
        try:
            return body.read()
        except (BotoCoreError, OSError) as exc:
            raise StoreError(self.site, f"get {bucket}/{key}", f"read interrupted ({exc})") from exc

    def put(self, bucket: str, key: str, data: bytes) -> None:
        self._call(f"put {bucket}/{key}", "put_object", Bucket=bucket, Key=key, Body=data)

    def delete(self, bucket: str, key: str) -> None:
        self._call(f"delete {bucket}/{key}", "delete_object", Bucket=bucket, Key=key)

    def delete_bucket(self, bucket: str) -> None:
        """Objects first, then the bucket (S3 refuses a non-empty one). Absent already: done."""
        if bucket not in self.buckets():
            return
        for obj in self.objects(bucket):
            self.delete(bucket, obj.key)
        self._call(f"delete bucket {bucket}", "delete_bucket", Bucket=bucket)
