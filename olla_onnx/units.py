"""Byte counts for people: binary units, and the one way each table and plot writes them."""

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30


def human_bytes(n: int | float) -> str:
    """``1536 -> '1.50 KiB'``; exact bytes below 1 KiB."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


def mib(n: int | float, fmt: str = ",.1f") -> str:
    """``n`` bytes in MiB as a bare number formatted with ``fmt``: ``mib(3 * 2**20) == '3.0'``."""
    return f"{n / MiB:{fmt}}"


def axis_unit(values) -> tuple[float, str]:
    """``(bytes per unit, unit name)`` for an axis whose largest value is the largest of ``values``:
    the largest of GiB, MiB and KiB not above it, else ``(1.0, "bytes")``."""
    top = max([float(v) for v in values] + [1.0])
    for div, unit in ((GiB, "GiB"), (MiB, "MiB"), (KiB, "KiB")):
        if top >= div:
            return float(div), unit
    return 1.0, "bytes"
