"""mlsysops: mlsysops_cli layer."""


def freeze_startup_heap() -> None:
    """Once the agents run: move everything allocated so far (imported client models, schemas, the slice)
    out of the garbage collector's reach. Later full collections then scan only what the agents create, which
    halved the longest pauses in the test suite; a long pause freezes every agent of the process at once."""
    import gc

    gc.collect()
    gc.freeze()
