"""What an app asks of the storage service, and which storage sites can give it.

A *storage site* is one S3-compatible store (one per cluster in `mlsysops up`), described in the slice
config (`storage.sites`) by its region, GDPR compliance and continuum layer. A *bucket intent* is one
declared bucket (`components[i].storage.buckets[j]`) read as the storage policy needs it: how many
replicas, where they may live, which components use it and their latency targets.

`site_verdicts` is the one filter both the admission check (an app whose bucket no site can hold is
refused, naming the field) and the storage policy use, so the two never disagree.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from mlsysops.agents.descriptions.app import MLSysOpsApp


@dataclass(frozen=True)
class StorageSite:
    name: str
    region: str = ""
    gdpr: bool = False
    layer: str = "cloud"
    node: str | None = None     # the (simulated) node hosting the store: where access latency is measured to


@dataclass(frozen=True)
class BucketIntent:
    app: str
    bucket_id: str
    owner: str                  # the component that declares the bucket
    path: str                   # field path of the declaration, for error messages
    replicas: int = 1
    gdpr: bool = False
    regions: tuple[str, ...] = ()
    sites: tuple[str, ...] = ()
    layers: tuple[str, ...] = ()
    targets_ms: dict[str, float] = field(default_factory=dict)   # component -> p95 access target

    @property
    def key(self) -> str:
        return f"{self.app}/{self.bucket_id}"

    @property
    def s3_name(self) -> str:
        return s3_bucket_name(self.app, self.bucket_id)


def bucket_intents(app: MLSysOpsApp) -> list[BucketIntent]:
    out = []
    for i, comp in enumerate(app.components):
        for j, b in enumerate((comp.storage.buckets if comp.storage else None) or []):
            lr = b.location_restrictions
            out.append(BucketIntent(
                app=app.name, bucket_id=b.bucket_id, owner=comp.name,
                path=f"components[{i}].storage.buckets[{j}]", replicas=b.replica_count,
                gdpr=bool(lr and lr.gdpr), regions=tuple(lr.regions or ()) if lr else (),
                sites=tuple(lr.sites or ()) if lr else (),
                layers=tuple(str(x.value) for x in lr.layers or ()) if lr else (),
                targets_ms={t.component: float(t.max_latency_ms) for t in b.access_latency or []}))
    return out


def site_verdicts(intent: BucketIntent, sites: list[StorageSite] | tuple[StorageSite, ...]) -> dict[str, str | None]:
    """Per site: None if it may hold a replica, else why not (naming the restriction's field)."""
    lr = f"{intent.path}.location_restrictions"
    out: dict[str, str | None] = {}
    for s in sites:
        if intent.gdpr and not s.gdpr:
            out[s.name] = f"{lr}.gdpr: site {s.name} (region {s.region or '?'}) is not GDPR-compliant"
        elif intent.regions and s.region not in intent.regions:
            out[s.name] = f"{lr}.regions: site {s.name} is in region {s.region or '?'}, not {list(intent.regions)}"
        elif intent.sites and s.name not in intent.sites:
            out[s.name] = f"{lr}.sites: site {s.name} is not in {list(intent.sites)}"
        elif intent.layers and s.layer not in intent.layers:
            out[s.name] = f"{lr}.layers: site {s.name} is in layer {s.layer}, not {list(intent.layers)}"
        else:
            out[s.name] = None
    return out


def placement_problem(intent: BucketIntent, sites: list[StorageSite] | tuple[StorageSite, ...]) -> str | None:
    """Why the bucket cannot be placed at all (no site, or fewer allowed sites than replicas), else None."""
    verdicts = site_verdicts(intent, sites)
    allowed = [n for n, why in verdicts.items() if why is None]
    if not allowed:
        reasons = "; ".join(why for why in verdicts.values() if why) or "no storage site is configured"
        return f"bucket {intent.bucket_id!r}: no storage site satisfies its constraints ({reasons})"
    if len(allowed) < intent.replicas:
        return (f"bucket {intent.bucket_id!r}: {intent.path}.replicas asks for {intent.replicas} replicas but only "
                f"{len(allowed)} site(s) satisfy its constraints ({', '.join(sorted(allowed))})")
    return None


_S3_INVALID = re.compile(r"[^a-z0-9-]+")


def s3_bucket_name(app: str, bucket_id: str) -> str:
    """The bucket's name on every store: `<app>-<bucket>` in S3's alphabet, at most 63 characters
    (a hash suffix keeps long or sanitised names distinct)."""
    raw = f"{app}-{bucket_id}"
    name = _S3_INVALID.sub("-", raw.lower()).strip("-")
    if name != raw or len(name) > 63 or len(name) < 3:
        digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
        name = f"{name[:54].strip('-')}-{digest}"
    return name
