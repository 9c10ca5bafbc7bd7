"""Data-plane benchmark (issue 17): both halves in one run.

Run: ``.venv/bin/python benchmarks/data_plane.py [--seed S] [--moves N]``

1. ``benchmarks/storage_access.py``: components' data-access p95 on a seeded simulated scenario with the
   storage policy vs all data in the cloud vs static placement, and the bytes the policy moved.
2. ``benchmarks/endpoint_update.py``: on two real kube-apiservers, from a component running in its new
   cluster to the callers' EndpointSlice in the other cluster pointing at it (and Kubernetes' own in-cluster
   controller as the baseline).

Last line: ``access_p95_ratio=`` (policy / cloud-only) ``endpoint_update_p95_s=`` ``bytes_moved=``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import endpoint_update, storage_access  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--moves", type=int, default=20)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    print("== storage: data access by strategy")
    storage_access.main(["--seed", str(args.seed)])
    store = storage_access.run(args.seed)
    print("\n== traffic: callers' endpoints after a cross-cluster move")
    ends = asyncio.run(endpoint_update.run(args.seed, args.moves))
    endpoint_update.print_table(ends)
    print(f"access_p95_ratio={store['access_p95_ratio']} endpoint_update_p95_s={ends['endpoint_update_p95_s']:.3f} "
          f"bytes_moved={store['bytes_moved']} moves={ends['moves']} failures={len(ends['failures'])}")
    return 1 if ends["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
