"""Notify's error bodies: `{"status_code": N, "errors": [{"error": NAME, "message": TEXT}]}`.

The messages are Notify's own English words, not translated: they are part of the protocol,
and integrations (and Notify's client libraries' documentation) match on them."""

from __future__ import annotations


class ApiError(Exception):
    def __init__(self, status_code: int, error: str, *messages: str):
        super().__init__(messages[0] if messages else error)
        self.status_code = status_code
        self.error = error
        self.messages = messages

    def body(self) -> dict:
        return {
            "status_code": self.status_code,
            "errors": [{"error": self.error, "message": m} for m in self.messages],
        }


def auth_error(message: str, status_code: int = 403) -> ApiError:
    return ApiError(status_code, "AuthError", message)


def validation_error(*messages: str) -> ApiError:
    return ApiError(400, "ValidationError", *messages)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequestError", message)


def not_found() -> ApiError:
    return ApiError(404, "NoResultFound", "No result found")


def rate_limit_error(key_type: str, limit: int, interval_s: int) -> ApiError:
    # Notify's documentation calls normal keys "live", and so does its message.
    shown = "LIVE" if key_type == "normal" else key_type.upper()
    return ApiError(
        429,
        "RateLimitError",
        f"Exceeded rate limit for key type {shown} of {limit} requests per {interval_s} seconds",
    )
