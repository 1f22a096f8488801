"""What talking to an upstream over HTTP can fail with.

    ModelyardError
    └── HttpError                  an upstream could not be asked or did not answer whole
        ├── UpstreamConnectError   no connection could be made (refused, unreachable, timed out)
        └── UpstreamResetError     the connection broke (`before_headers`: before any response)

Callers translate these into their own outcomes: the gateway into an attempt's outcome, the load
generator into a failed request's error class.
"""

from __future__ import annotations

from modelyard.errors import ModelyardError


class HttpError(ModelyardError):
    """An upstream could not be asked, or its answer broke off."""


class UpstreamConnectError(HttpError):
    """No connection could be made (refused, unreachable, timed out)."""


class UpstreamResetError(HttpError):
    """The connection broke; `before_headers` says whether any response had arrived."""

    def __init__(self, message: str, before_headers: bool) -> None:
        super().__init__(message)
        self.before_headers = before_headers
