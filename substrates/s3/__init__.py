"""S3-compatible object stores: a SeaweedFS process per storage site (`seaweed.py`) and a small boto3
client per store (`client.py`). boto3 is synchronous: callers on an event loop run it in a thread."""
