"""MQTT, what devices behind a gateway speak: a mosquitto broker process on loopback (`broker.py`), started
by `mlsysops up` (slice config `devices`) and the tests."""
