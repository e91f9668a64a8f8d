"""Turning library exceptions into the one-line messages the pipeline reports."""


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
