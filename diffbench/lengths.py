"""Parse the length and depth grids users type on the command line.

Lengths: ``8k-64k`` doubles (8k, 16k, 32k, 64k); ``8k:64k:8k`` steps linearly; ``4096,12k`` is a
list; ``k`` means 1024. Depths: a count (``5`` gives 0, 25, 50, 75, 100 percent) or a list of
percentages (``0,10,50`` or ``50%``).
"""

from __future__ import annotations

import math
import re

from diffbench.errors import UsageError

_LENGTH_HELP = "use e.g. '8k-64k' (doubling), '8k:64k:8k' (linear steps) or '4096,12k' (a list); k = 1024"
_DEPTH_HELP = "use a count such as '5' (0,25,50,75,100%) or percentages such as '0,50,100' or '50%'"
_TOKEN_COUNT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*$")
MAX_LENGTH = 4 * 1024 * 1024
MAX_GRID = 256


def parse_token_count(text: str) -> int:
    """One length such as '4096', '8k' or '1.5k' as a whole number of tokens."""
    match = _TOKEN_COUNT.match(text)
    if not match:
        raise UsageError(f"invalid length {text!r}: {_LENGTH_HELP}")
    number, unit = float(match.group(1)), match.group(2).lower()
    value = number * {"": 1, "k": 1024, "m": 1024 * 1024}[unit]
    if not math.isfinite(value) or value > MAX_LENGTH:
        raise UsageError(f"invalid length {text!r}: more than {MAX_LENGTH} tokens is not supported")
    if value != int(value) or value < 1:
        raise UsageError(
            f"invalid length {text!r}: it must be a whole, positive number of tokens; {_LENGTH_HELP}"
        )
    return int(value)


def parse_lengths(text: str) -> list[int]:
    """A length grid, sorted ascending and without repeats; errors name the whole --lengths value."""
    text = text.strip()
    if not text:
        raise UsageError(f"empty --lengths: {_LENGTH_HELP}")
    try:
        values = _grid_values(text)
    except UsageError as error:
        message = str(error)
        if message.startswith("invalid lengths"):
            raise
        raise UsageError(f"invalid lengths {text!r}: {message.removeprefix('invalid ')}") from None
    return sorted(set(values))


def _grid_values(text: str) -> list[int]:
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3:
            raise UsageError(f"invalid lengths {text!r}: a range needs start:stop:step; {_LENGTH_HELP}")
        start, stop, step = (parse_token_count(p) for p in parts)
        if stop < start:
            raise UsageError(f"invalid lengths {text!r}: stop {stop} is below start {start}")
        if (stop - start) // step + 1 > MAX_GRID:
            raise UsageError(
                f"invalid lengths {text!r}: too many lengths (more than {MAX_GRID}); use a larger step"
            )
        return list(range(start, stop + 1, step))
    if "-" in text:
        parts = text.split("-")
        if len(parts) != 2:
            raise UsageError(f"invalid lengths {text!r}: a doubling range is start-stop; {_LENGTH_HELP}")
        start, stop = (parse_token_count(p) for p in parts)
        if stop < start:
            raise UsageError(f"invalid lengths {text!r}: stop {stop} is below start {start}")
        values = []
        value = start
        while value <= stop:
            values.append(value)
            value *= 2
        if values[-1] != stop:
            values.append(stop)
        return values
    items = text.split(",")
    if any(not item.strip() for item in items):
        raise UsageError(f"invalid lengths {text!r}: empty item in the list; {_LENGTH_HELP}")
    if len(items) > MAX_GRID:
        raise UsageError(f"invalid lengths {text!r}: {len(items)} lengths is too many (at most {MAX_GRID})")
    return [parse_token_count(item) for item in items]


def parse_depths(text: str) -> list[float]:
    """A depth grid in percent (0 = start of the document, 100 = its end), sorted ascending."""
    text = text.strip()
    if not text:
        raise UsageError(f"empty --depths: {_DEPTH_HELP}")
    if "," not in text and "%" not in text and "." not in text:
        if not re.fullmatch(r"[0-9]+", text):
            raise UsageError(f"invalid depths {text!r}: {_DEPTH_HELP}")
        count = int(text)
        if not 1 <= count <= 101:
            raise UsageError(f"invalid depth count {count}: it must be between 1 and 101; {_DEPTH_HELP}")
        if count == 1:
            return [50.0]
        return [round(100.0 * i / (count - 1), 6) for i in range(count)]
    depths: list[float] = []
    for item in text.split(","):
        item = item.strip().removesuffix("%").strip()
        try:
            value = float(item)
        except ValueError:
            raise UsageError(f"invalid depth {item!r} in {text!r}: {_DEPTH_HELP}") from None
        if not 0.0 <= value <= 100.0:
            raise UsageError(f"invalid depth {value:g} in {text!r}: depths are percentages from 0 to 100")
        depths.append(value + 0.0)  # '-0' is depth 0, not -0.0 (which would name samples 'niah/…/-0/…')
    return sorted(set(depths))


def format_length(tokens: int) -> str:
    """'8K' for 8192, '1.5K' for 1536, '1000' for 1000: the labels of heatmap columns."""
    if tokens % 1024 == 0:
        return f"{tokens // 1024}K"
    if tokens % 512 == 0:
        return f"{tokens / 1024:g}K"
    return str(tokens)
