"""Bad input: the exception that stops a run, and the warning about input descent works around; both name the fix."""


class InputError(ValueError):
    """Raised for bad data, config or environment; pipelines turn it into exit code 2."""


class InputWarning(UserWarning):
    """Input descent works around but the user should fix (e.g. an entirely missing column): `descent: warning: ...`."""
