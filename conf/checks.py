"""The checks a schema cannot express: one helper for choices, and reporting every problem at once."""
from __future__ import annotations

from conf.errors import BadInput

# OmegaConf's mark of a value the command line must give (omegaconf.MISSING is this string).
MISSING = "???"


def check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise BadInput(f"{name}={value!r} is not supported; choose one of {', '.join(allowed)}")


class Problems:
    """The problems a validation finds, raised together by `raise_if_any`.

    One BadInput, on one line: a single problem's message, or several numbered.
    """

    def __init__(self) -> None:
        self.found: list[BadInput] = []

    def add(self, message: str) -> None:
        self.found.append(BadInput(message))

    def choice(self, name: str, value: str, allowed: tuple[str, ...]) -> None:
        try:
            check_choice(name, value, allowed)
        except BadInput as error:
            self.found.append(error)

    def raise_if_any(self) -> None:
        if len(self.found) == 1:
            raise self.found[0]
        if self.found:
            listed = " ".join(f"({i}) {error}" for i, error in enumerate(self.found, 1))
            raise BadInput(f"{len(self.found)} problems: {listed}")
