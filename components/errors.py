"""The one exception type for bad input: its message names the problem and the fix."""


class InputError(ValueError):
    """Raised for bad data, config or environment; pipelines turn it into exit code 2."""
