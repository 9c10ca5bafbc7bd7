"""Quantities, frequencies and durations parse into base units and keep what was written."""

import pytest

from mlsysops.agents.descriptions import ByteQuantity, CpuQuantity, Duration, Frequency, GigabyteQuantity
from mlsysops.agents.descriptions.quantities import parse_duration


@pytest.mark.parametrize(("raw", "cores"), [("250m", 0.25), ("0.5", 0.5), (2, 2.0), ("1", 1.0), (1.5, 1.5)])
def test_cpu(raw, cores):
    q = CpuQuantity.parse(raw)
    assert q.value == pytest.approx(cores)
    assert q.raw == raw


@pytest.mark.parametrize(
    ("raw", "nbytes"),
    [
        ("64Mi", 64 * 2**20),
        ("2Gi", 2 * 2**30),
        ("500M", 500e6),
        ("1k", 1000),
        (1024, 1024),
        ("1.5Gi", 1.5 * 2**30),
        ("4GB", 4e9),
    ],
)
def test_bytes(raw, nbytes):
    assert ByteQuantity.parse(raw).value == pytest.approx(nbytes)


def test_gigabytes_plain_number_is_gib():
    assert GigabyteQuantity.parse(4).value == 4 * 2**30
    assert GigabyteQuantity.parse("120").value == 120 * 2**30
    assert GigabyteQuantity.parse("512Mi").value == 512 * 2**20


@pytest.mark.parametrize(
    ("raw", "hz"),
    [
        ("1.4GHz", 1.4e9),
        ("1400MHz", 1.4e9),
        ("1400mhz", 1.4e9),
        (1.4, 1.4e9),
        (1400, 1.4e9),
        (2_400_000_000, 2.4e9),
        ("800kHz", 8e5),
    ],
)
def test_frequency(raw, hz):
    assert Frequency.parse(raw).value == pytest.approx(hz)


def test_frequency_guess_note():
    assert Frequency.guess_note("1.4GHz") is None
    assert "GHz" in Frequency.guess_note(1.4)
    assert "above 10 GHz" in Frequency.guess_note(14000)
    assert Frequency.guess_note(2_000_000_000) is None


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("5s", 5),
        ("2m", 120),
        ("500ms", 0.5),
        ("1m30s", 90),
        (3, 3),
        ("1.5", 1.5),
        ("1h", 3600),
        ("2d", 172800),
    ],
)
def test_duration(raw, seconds):
    assert parse_duration(raw) == pytest.approx(seconds)
    assert Duration.parse(raw).raw == raw


@pytest.mark.parametrize(
    ("cls", "raw"),
    [
        (CpuQuantity, "250x"),
        (CpuQuantity, "-1"),
        (ByteQuantity, "64Mx"),
        (ByteQuantity, "lots"),
        (Frequency, "1.4 parsecs"),
        (Duration, "5 fortnights"),
        (Duration, "s5"),
        (Duration, ""),
        (CpuQuantity, True),
        (ByteQuantity, [1]),
        (CpuQuantity, float("nan")),
        (Duration, -1),
    ],
)
def test_invalid(cls, raw):
    with pytest.raises(ValueError):
        cls.parse(raw)


def test_equality_and_order_use_value():
    assert ByteQuantity.parse("1Gi") == ByteQuantity.parse("1024Mi")
    assert CpuQuantity.parse("500m") < CpuQuantity.parse(1)
    assert CpuQuantity.parse("1") != ByteQuantity.parse("1")
    assert len({ByteQuantity.parse("1Gi"), ByteQuantity.parse("1024Mi")}) == 1
