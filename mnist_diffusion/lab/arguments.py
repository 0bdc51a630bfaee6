"""The checks of what a user types, shared by the command lines and the demo: numbers in a range, seeds, guidance
intervals, and the option checks of the training scripts. A bad value is named with what was expected; argparse turns
the message into a usage error (exit 2).

(The pipeline, scheduler and UNet files keep their own checks: they are copied alone into a Hub repo as remote code.)
"""

import argparse
import math

MAX_SEED = 2**64 - 1  # the largest seed `torch.Generator.manual_seed` takes


def check_number(value, minimum: float, maximum: float | None = None, *, integer: bool = False) -> int | float:
    """
    The check behind every number a user types, on the command line and in the demo: `value` must be an integer
    (`integer`) or a finite number, from `minimum` to `maximum` (no upper bound if None).

    Returns:
        `int` or `float`: the value.

    Raises:
        `ValueError`: naming the value and what was expected, e.g. "expected an integer ≥ 1, got 0".
    """
    expected = "an integer" if integer else "a finite number"
    expected += f" ≥ {minimum}" if maximum is None else f" from {minimum} to {maximum}"
    is_number = isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
    if (
        isinstance(value, bool)
        or not is_number
        or (integer and value != int(value))
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        raise ValueError(f"expected {expected}, got {value!r}")
    return int(value) if integer else float(value)


def number_argument(minimum: float, maximum: float | None = None, *, integer: bool = False):
    """An argparse `type` that parses an option's text and applies [`check_number`] to it."""

    def parse(text: str) -> int | float:
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            value = text  # not a number at all; check_number says what was expected
        try:
            return check_number(value, minimum, maximum, integer=integer)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


def guidance_interval_type(text: str) -> tuple[float, float] | str:
    """
    argparse type of a guidance interval: `LOW,HIGH` in training timesteps, or `all` for every step (kept as the
    string, since only the loaded model knows its last timestep; see [`every_step_if_all`]).
    """
    if text == "all":
        return text
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH (e.g. 82,579) or 'all', got {text!r}") from None
    if not 0 <= low <= high:
        raise argparse.ArgumentTypeError(f"expected 0 ≤ LOW ≤ HIGH, got {text!r}")
    return low, high


# The ranges that option checks name, and the test of each (NaN passes none of them).
RANGES = {
    "a positive integer": lambda value: value >= 1,
    "positive": lambda value: value > 0,
    "≥ 0": lambda value: value >= 0,
    "in [0, 1)": lambda value: 0 <= value < 1,
    "in (0, 1)": lambda value: 0 < value < 1,
    "a finite number ≥ 0": lambda value: math.isfinite(value) and value >= 0,
}


def out_of_range(args: argparse.Namespace, names: list[str], expected: str) -> list[str]:
    """
    `--name must be <expected>, got <value>` for each of the options `names` that is set (not None) and outside the
    range `expected`, one of the keys of `RANGES` (`"a positive integer"`, `"positive"`, `"≥ 0"`, ...).
    """
    valid = RANGES[expected]
    return [f"--{name} must be {expected}, got {getattr(args, name)}"
            for name in names if getattr(args, name) is not None and not valid(getattr(args, name))]
