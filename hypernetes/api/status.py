"""metav1.Status errors: every failure the API returns is one of these, as upstream words them.

kubectl prints `message` verbatim and branches on `reason`/`code` (apply decides create vs patch
on a 404 NotFound), so the wording follows kube-apiserver's.
"""

from __future__ import annotations

from hypernetes.objects import Obj


class ApiError(Exception):
    """An error that becomes a metav1.Status response."""

    def __init__(
        self, code: int, reason: str, message: str, details: Obj | None = None, retry_after: int = 0
    ) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details
        self.retry_after = retry_after  # seconds, sent as Retry-After (client-go waits that long)

    def status(self) -> Obj:
        return status_body(self.code, self.reason, self.message, self.details)


# Field order of metav1.Status, StatusDetails and StatusCause as upstream's Go structs declare
# them (encoding/json writes struct fields in that order): clients that compare bodies byte for
# byte, or print them, see what kube-apiserver sends.
_DETAILS_ORDER = ("name", "group", "kind", "uid", "causes", "retryAfterSeconds")
_CAUSE_ORDER = ("reason", "message", "field")


def _in_order(obj: Obj, order: tuple[str, ...]) -> Obj:
    return {k: obj[k] for k in order if k in obj} | {k: v for k, v in obj.items() if k not in order}


def _upstream_details(details: Obj) -> Obj:
    out = _in_order(details, _DETAILS_ORDER)
    if isinstance(out.get("causes"), list):
        out["causes"] = [_in_order(c, _CAUSE_ORDER) if isinstance(c, dict) else c for c in out["causes"]]
    return out


def status_body(code: int, reason: str, message: str, details: Obj | None = None) -> Obj:
    body: Obj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if details:
        body["details"] = _upstream_details(details)
    body["code"] = code  # last, after details, as in metav1.Status
    return body


def success(details: Obj | None = None) -> Obj:
    body: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
    if details:
        body["details"] = _upstream_details(details)
    return body


def _details(resource: str, name: str, group: str) -> Obj:
    return _upstream_details(
        {"name": name, "group": group, "kind": resource} if group else {"name": name, "kind": resource}
    )


def qualified(resource: str, group: str) -> str:
    """`pods` or `deployments.apps`: how upstream names a resource in messages."""
    return f"{resource}.{group}" if group else resource


def not_found(resource: str, name: str, group: str = "") -> ApiError:
    return ApiError(
        404, "NotFound", f'{qualified(resource, group)} "{name}" not found', _details(resource, name, group)
    )


def already_exists(resource: str, name: str, group: str = "") -> ApiError:
    return ApiError(
        409,
        "AlreadyExists",
        f'{qualified(resource, group)} "{name}" already exists',
        _details(resource, name, group),
    )


def conflict(resource: str, name: str, group: str, why: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {qualified(resource, group)} "{name}": {why}',
        _details(resource, name, group),
    )


STALE = "the object has been modified; please apply your changes to the latest version and try again"


def invalid(kind: str, name: str, group: str, causes: list[Obj]) -> ApiError:
    summary = ", ".join(
        f"{c['field']}: {c['message']}" if c.get("field") else str(c["message"]) for c in causes
    )
    if len(causes) > 1:
        summary = f"[{summary}]"
    details: Obj = {"name": name, "kind": kind, "causes": causes}
    if group:
        details["group"] = group
    return ApiError(422, "Invalid", f'{kind} "{name}" is invalid: {summary}', details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def forbidden(message: str, details: Obj | None = None) -> ApiError:
    return ApiError(403, "Forbidden", message, details)


def unauthorized(message: str = "Unauthorized") -> ApiError:
    return ApiError(401, "Unauthorized", message)


def method_not_allowed(method: str) -> ApiError:
    return ApiError(
        405, "MethodNotAllowed", f"the server does not allow this method on the requested resource ({method})"
    )


def not_acceptable(accept: str) -> ApiError:
    return ApiError(
        406,
        "NotAcceptable",
        f"only the following media types are accepted: "
        f"application/json, application/yaml (asked for {accept})",
    )


def unsupported_media_type(content_type: str) -> ApiError:
    return ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types "
        f"include: application/json, application/yaml, application/vnd.kubernetes.protobuf "
        f'(got "{content_type}")',
    )


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def no_such_path() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource")


def too_many_requests(message: str, retry_after: int) -> ApiError:
    """429, as APF refuses: kubectl and client-go wait Retry-After seconds and try again."""
    return ApiError(429, "TooManyRequests", message, {"retryAfterSeconds": retry_after}, retry_after)


def internal(message: str) -> ApiError:
    return ApiError(500, "InternalError", f"Internal error occurred: {message}")


def too_old(requested: int, oldest: int) -> ApiError:
    return gone(f"too old resource version: {requested} ({oldest})")
