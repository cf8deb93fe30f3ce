"""A tracking server that refuses descent (MLflow's basic-auth app: 401 who are you, 403 not allowed), in one line.

Retrying cannot help either refusal, so both are bad input (exit 2). Nothing here prints a password.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from urllib.parse import urlsplit

from components.errors import InputError

USER, PASSWORD = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"
# MLflow's REST client: "API request to endpoint /api/2.0/mlflow/runs/create failed with error code 403 != 200".
_REFUSED = re.compile(r"endpoint (/\S+) failed with error code (401|403) != 200")
_CODES = {"UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403}
_READS = {"get", "get-by-name", "search", "list", "get-history"}
_NAMES: dict[str, str] = {}


class AccessRefused(InputError):
    """The tracking server refused descent's credentials or their rights; the message says what to set or ask."""


def note(experiment: str | None = None, model: str | None = None) -> None:
    """Remember the experiment and registered model this process works on, to name them in a refusal."""
    _NAMES.update({k: v for k, v in {"experiment": experiment, "model": model}.items() if v})


def refusal(exc: BaseException) -> str | None:
    """The one-line answer to a 401 or 403 that caused `exc` (or is `exc`), else None."""
    seen: list[BaseException] = []
    while exc is not None and not any(exc is s for s in seen):
        if isinstance(exc, AccessRefused):
            return str(exc)
        found = _status(exc)
        if found:
            return explain(*found)
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__  # a refusal wrapped in another error ("no run ...") still counts
    return None


def refusal_in(text: str) -> str | None:
    """The one-line answer to a refusal quoted in an error message (a variant's outcome from a worker)."""
    found = _REFUSED.search(text)
    return explain(int(found.group(2)), found.group(1)) if found else None


def stop_at_refusal(outcomes: Iterator[dict], on_ray: bool = False) -> Iterator[dict]:
    """Pass a sweep's outcomes on; at the first variant the server refused, stop the rest and raise AccessRefused.

    Every other variant would be refused the same way; the executor's clean-up ends their open runs.
    """
    for outcome in outcomes:
        refused = outcome.get("refused") or (
            refusal_in(outcome.get("error", "")) if outcome["state"] == "failed" else None
        )
        if refused:
            close = getattr(outcomes, "close", None)
            if close is not None:
                close()
            where = " (a Ray task signs in with the credentials in its node's `ray start` environment)"
            raise AccessRefused(f"variant {outcome['name']}: {refused}{where if on_ray else ''}")
        yield outcome


def explain(status: int, endpoint: str = "", method: str = "") -> str:
    """What a 401 or 403 from `endpoint` means for this user, and what to do: one line."""
    from pipelines.backend import redacted, tracking_uri

    server, user = redacted(tracking_uri()), os.environ.get(USER)
    if status == 401:
        if user and os.environ.get(PASSWORD):
            refused = f"did not accept user {user!r} (401: wrong user name or password)"
        else:
            refused = "needs a user name and password (401) and got none"
        return f"tracking server {server} {refused}: set {USER} and {PASSWORD} to your login on that server"
    who = f"user {user!r}" if user else "this login"
    where = f" on {endpoint}" if endpoint else ""
    return f"tracking server {server} refused {who} (403{where}): {_needs(endpoint, method)}"


def _needs(endpoint: str, method: str) -> str:
    ask = "ask an admin of the server to grant it (README: Team setup)"
    action = endpoint.rstrip("/").rsplit("/", 1)[-1]
    reads = action in _READS or method == "GET"
    if "registered-models" in endpoint or "model-versions" in endpoint:
        model = _NAMES.get("model")
        model = f"registered model {model!r}" if model else "the registered model"
        if reads:
            return f"reading {model} needs READ on it: {ask}"
        return f"registering or aliasing a version of {model} needs EDIT on it: {ask}"
    launched = os.environ.get("MLFLOW_EXPERIMENT_ID")  # under `mlflow run`: the launcher's experiment
    name = _NAMES.get("experiment")
    experiment = f"experiment {launched}" if launched else f"experiment {name!r}" if name else "the experiment"
    if endpoint.endswith("experiments/create"):
        return f"creating {experiment} is not allowed: ask an admin to create it and grant you EDIT on it"
    if reads:
        also = " (a run id that does not exist is refused the same way)" if "/runs/" in endpoint else ""
        return f"reading {experiment} or its runs needs READ on it{also}: {ask}"
    return f"writing runs to {experiment} needs EDIT on it: {ask}"


def _status(exc: BaseException) -> tuple[int, str, str] | None:
    """(401 or 403, endpoint, HTTP method) of a refusal raised by MLflow's REST client or by `requests`."""
    found = _REFUSED.search(str(exc))
    if found:
        return int(found.group(2)), found.group(1), ""
    response = getattr(exc, "response", None)  # requests.HTTPError: artifact uploads and downloads
    status = getattr(response, "status_code", None)
    if status in (401, 403):
        return status, urlsplit(response.url).path, getattr(response.request, "method", "") or ""
    code = getattr(exc, "error_code", None)
    if code in _CODES and os.environ.get("MLFLOW_TRACKING_URI", "").startswith(("http://", "https://")):
        return _CODES[code], "", ""
    return None
