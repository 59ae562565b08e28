"""What an admin action can refuse, each with an HTTP status and a sentence fit to show on the page."""

from __future__ import annotations


class AdminError(Exception):
    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadInput(AdminError):
    status_code = 400


class Forbidden(AdminError):
    status_code = 403


class NotFound(AdminError):
    status_code = 404


class Conflict(AdminError):
    status_code = 409


class TooLarge(AdminError):
    status_code = 413


class Unsupported(AdminError):
    status_code = 415
