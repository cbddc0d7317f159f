"""The OpenAPI document: FastAPI's, corrected to what lightd really answers.

FastAPI documents a 422 ``{"detail": [...]}`` for every validated route and sees path and query
parameters as bare strings. lightd answers 400 ``{"error"}`` (``api/errors.py``), refuses requests
in its guard middleware before any route runs (401, 406, 413), and reads parameters as text with the
core's own parsers. This module rewrites the generated document so that a client, or a fuzzer, that
trusts it sends requests lightd accepts and gets only the statuses and bodies it documents.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from lightd.api.middleware import AUTH_ERROR, BODY_ERROR, PUBLIC_PATHS, VENDOR_ERROR
from lightd.core.containers import _INTERNAL_ID

__all__ = [
    "COMMAND_SCHEMA",
    "COUNT_SCHEMA",
    "TTL_SCHEMA",
    "ENV_SCHEMA",
    "IMAGE_SCHEMA",
    "INTERNAL_ID_SCHEMA",
    "IP_SCHEMA",
    "PORT_BINDING_RULE",
    "PORT_SCHEMA",
    "PORT_SPEC_SCHEMA",
    "PROTOCOLS_SCHEMA",
    "PROTOCOL_SCHEMA",
    "TEXT_SCHEMA",
    "VENDOR_MEDIA_TYPE",
    "build_openapi",
    "install_openapi",
]

Json = dict[str, Any]

VENDOR_MEDIA_TYPE = "Application/vnd.pkglatv1+json"

# JSON Schema has no case-insensitive flag (patterns are ECMA-262), so case is spelled out.
_TCP_UDP = "[Tt][Cc][Pp]|[Uu][Dd][Pp]"
PROTOCOL_SCHEMA: Json = {
    "type": "string",
    "pattern": f"^({_TCP_UDP})$",
    "description": "tcp or udp, any case (answers say it in lowercase)",
    "examples": ["tcp"],
}
PROTOCOLS_SCHEMA: Json = {
    "type": "string",
    "pattern": f"^({_TCP_UDP}|[Bb][Oo][Tt][Hh])$",
    "description": "tcp, udp or both, any case",
    "examples": ["tcp"],
}
# JSON Schema counts 25565.0 as an integer; lightd takes only 25565 (not a float, CONTRACT.md).
_WHOLE = "written as an integer (25565.0 is refused)"
PORT_SCHEMA: Json = {
    "type": "integer",
    "minimum": 1,
    "maximum": 65535,
    "description": _WHOLE,
    "examples": [25565],
}
# The kernel treats an IPv4-mapped IPv6 address (::ffff:a.b.c.d, in any of its spellings) as the
# IPv4 one, so lightd refuses it (400 naming the IPv4 form): the schema excludes it too.
_MAPPED = (
    r"^(?:(?:0{1,4}:){5}|(?:(?:0{1,4}:){1,4}|:):(?:0{1,4}:){0,4})[Ff]{4}"
    r"(?::(?:\d{1,3}\.){3}\d{1,3}|:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|::[0-9A-Fa-f]{0,4}|:[0-9A-Fa-f]{1,4}::)$"
)
IP_SCHEMA: Json = {
    "anyOf": [
        {"type": "string", "format": "ipv4"},
        {"type": "string", "format": "ipv6", "not": {"pattern": _MAPPED}},
    ],
    "description": "an IPv4 or IPv6 address, without a zone; 0.0.0.0 and :: mean every address. "
    "IPv4-mapped IPv6 (::ffff:a.b.c.d) is refused: use the IPv4 form",
    "examples": ["0.0.0.0"],
}
# A port written as text (one end of a range): ASCII digits from 1 to 65535, no leading zero.
_PORT_TEXT = "(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_PORT_SPEC_ITEM: Json = {
    "anyOf": [
        PORT_SCHEMA,
        {"type": "string", "pattern": f"^{_PORT_TEXT}(-{_PORT_TEXT})?$", "examples": ["27015-27030"]},
    ]
}
PORT_SPEC_SCHEMA: Json = {
    "anyOf": [
        {"type": "array", "items": _PORT_SPEC_ITEM, "minItems": 1, "maxItems": 65535},
        _PORT_SPEC_ITEM,
    ],
    "description": 'port numbers and "A-B" ranges (A no more than B), or one of them alone',
    "examples": [[25565, "27015-27030"]],
}
COUNT_SCHEMA: Json = {"type": "integer", "minimum": 1, "maximum": 65535, "description": _WHOLE}
TTL_SCHEMA: Json = {
    "type": "integer", "minimum": 1, "maximum": 86400,
    "description": "seconds the lease lasts unless renewed; " + _WHOLE,
}
# The engine hands these strings to execve and the environment, where NUL ends a string.
_NO_NUL = "^[^\\u0000]*$"
TEXT_SCHEMA: Json = {"type": "string", "pattern": _NO_NUL}
IMAGE_SCHEMA: Json = {**TEXT_SCHEMA, "minLength": 1, "maxLength": 512, "examples": ["itzg/minecraft-server"]}
COMMAND_SCHEMA: Json = {
    "anyOf": [{"type": "array", "items": TEXT_SCHEMA}, TEXT_SCHEMA, {"type": "null"}],
    "description": "a command line as one string, or its words as an array",
}
ENV_SCHEMA: Json = {
    "type": "object",
    "propertyNames": {"pattern": "^[^=\\u0000]+$"},
    "additionalProperties": TEXT_SCHEMA,
    "description": "names without '=' or NUL; values are never echoed back",
}
INTERNAL_ID_SCHEMA: Json = {"type": "string", "pattern": _INTERNAL_ID.pattern, "examples": ["mc-survival-1"]}
# A binding names a pool entry (port) or asks for any free one (container_port): one is needed.
PORT_BINDING_RULE: Json = {
    "anyOf": [
        {"required": ["port"], "properties": {"port": {"type": "integer"}}},
        {"required": ["container_port"], "properties": {"container_port": {"type": "integer"}}},
    ]
}
_FLAG_TEXT: Json = {
    "type": "string",
    "pattern": "^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|1|0)$",
    "description": "true or false (any case), or 1 or 0",
}

# Path and query parameters, read as text by the core's parsers: what that text may be.
PARAMETERS: dict[tuple[str, str], Json] = {
    ("path", "ip"): IP_SCHEMA,
    ("path", "port"): PORT_SCHEMA,
    ("path", "internal_id"): INTERNAL_ID_SCHEMA,
    ("query", "ip"): IP_SCHEMA,
    ("query", "protocol"): PROTOCOL_SCHEMA,
    ("query", "in_use"): _FLAG_TEXT,
}

ERROR_REF: Json = {"$ref": "#/components/schemas/Error"}
ERROR_SCHEMA: Json = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string", "description": "one sentence for a human"}},
    "additionalProperties": True,
    "description": "Every error lightd answers; some carry more keys (the conflicting port...)",
}

# Statuses every operation of a kind can answer, whatever it does.
_GUARD = {
    401: AUTH_ERROR,
    406: f"{VENDOR_ERROR} (the Accept header must list {VENDOR_MEDIA_TYPE}, any case)",
}
_INVALID = "Malformed request: the error names the field and why"
# What the server answers on every route, before the app sees the request (api/server.py and the
# guard): a declared length over the limit, a head over 16 KiB, one connection too many.
_EVERY_ROUTE = {
    413: BODY_ERROR + " (a declared length is refused before anything is read)",
    431: "Request head too large (over 16 KiB)",
}
_BUSY = "Too many connections; try again later"
_UNREAD = "The pool could not be read: changes before this read were not confirmed in time"
_UNSAVED = (
    "The change could not be made durable, or the firewall or container engine could not "
    "do it; nothing was changed"
)

_ENTRY: Json = {"$ref": "#/components/schemas/EntryOut"}
_PROTOCOL_OUT: Json = {"type": "string", "enum": ["tcp", "udp"]}
_KEY = {"ip": {"type": "string"}, "port": PORT_SCHEMA, "protocol": _PROTOCOL_OUT}
_TEXT: Json = {"type": "string"}
_NULLABLE_TEXT: Json = {"type": ["string", "null"]}


def _object(required: Json, optional: Json | None = None) -> Json:
    """An answer that always has ``required``; more keys may follow (clients must ignore them)."""
    return {"type": "object", "required": list(required), "properties": {**required, **(optional or {})}}


def _list(items: Json) -> Json:
    return {"type": "array", "items": items}


_CONTAINER = _object(
    {
        "internal_id": _TEXT,
        "image": _TEXT,
        "state": _TEXT,
        "ports": _list(_object({**_KEY, "container_port": PORT_SCHEMA})),
    },
    {
        "message": _TEXT,
        "engine_id": _NULLABLE_TEXT,
        "engine_state": _NULLABLE_TEXT,
        "startup_command": {"anyOf": [_list(_TEXT), _TEXT, {"type": "null"}]},
        "env": _list(_TEXT),
    },
)
_ANY_OBJECT: Json = {"type": "object"}
# Only when there is something to say: ports added inside ip_local_port_range that lightd does
# not keep in ip_local_reserved_ports (an outgoing connection may take one first).
_WARNINGS: Json = {**_list(_TEXT), "minItems": 1}
# One finding of a repair pass (lightd.service.repair_rules.Finding.to_json); more keys by type.
_FINDING = _object(
    {
        "type": {"type": "string", "enum": ["squatter", "orphan", "idle", "firewall_drift"]},
        "entry": {"anyOf": [_object(_KEY), {"type": "null"}]},
        "message": _TEXT,
        "since": _TEXT,
    }
)
_LEASE_SUMMARY = _object({"id": _TEXT, "expires_at": _TEXT, "ttl": TTL_SCHEMA})
_LEASE = _object({
    "id": _TEXT, "expires_at": _TEXT, "ttl": TTL_SCHEMA, "created_at": _TEXT, "ports": _list(_ENTRY),
})
_NO_LEASE = "Lease not found (never made, or released, kept or expired)"
# The stream's answer is text/event-stream, documented by its route; not JSON.
EVENT_STREAM_ANSWER: Json = {}
_NOT_FOUND = "Port not found in pool"
_AMBIGUOUS_OR_HELD = (
    "The ip:port exists for tcp and udp and ?protocol= does not say which, or "
    "the port is held by another holder (a container)"
)

# Per operation: the success body, and the statuses only it answers (the rules below add the rest).
OPERATIONS: dict[str, tuple[Json, dict[int, str]]] = {
    "GET /api/v1/public/ping": (_object({"status": {"const": "ok"}}), {}),
    "GET /network/ports/random": (
        _ENTRY,
        {404: "No available ports in pool (none matches)", 503: _UNREAD},
    ),
    "POST /network/ports": (
        _object({"message": _TEXT, **_KEY}, {"note": _NULLABLE_TEXT, "warnings": _WARNINGS}),
        {409: "Port already exists in pool"},
    ),
    "GET /network/ports": (
        _object({"ports": _list(_ENTRY), "total": {"type": "integer"}}),
        {503: _UNREAD},
    ),
    "POST /network/ports/bulk": (
        _object(
            {
                "message": _TEXT,
                "added_count": {"type": "integer"},
                "skipped_count": {"type": "integer"},
                "skipped": _list(_object({**_KEY, "reason": _TEXT})),
            },
            {"warnings": _WARNINGS},
        ),
        {},
    ),
    "POST /network/ports/claim": (
        _object({"ports": _list(_ENTRY)}, {"lease": _LEASE_SUMMARY}),
        {409: "No available ports in pool (not as many as asked, or none contiguous)"},
    ),
    "POST /network/ports/bulk-delete": (
        _object(
            {"message": _TEXT, "deleted_count": {"type": "integer"}},
            {"not_found": _list(_ANY_OBJECT), "skipped": _list(_ANY_OBJECT)},
        ),
        {409: "An item names an ip:port that exists for tcp and udp without a protocol; nothing was deleted"},
    ),
    "GET /network/ports/{ip}/{port}": (
        _ENTRY,
        {404: _NOT_FOUND, 409: "The ip:port exists for tcp and udp: add ?protocol=", 503: _UNREAD},
    ),
    "PUT /network/ports/{ip}/{port}/use": (
        _object(
            {"message": _TEXT, "ip": _TEXT, "port": PORT_SCHEMA, "in_use": {"type": "boolean"}},
            {"protocol": _PROTOCOL_OUT, "changed": {"type": "boolean"}},
        ),
        {404: _NOT_FOUND, 409: _AMBIGUOUS_OR_HELD + ", or a conflicting entry is in use"},
    ),
    "DELETE /network/ports/{ip}/{port}": (
        _object({"message": _TEXT}),
        {404: _NOT_FOUND, 409: _AMBIGUOUS_OR_HELD},
    ),
    "GET /containers": (_object({"containers": _list(_CONTAINER)}), {}),
    "POST /containers": (
        _CONTAINER,
        {
            409: "The container exists, or a port is missing from the pool, taken or conflicting; "
            "nothing was claimed"
        },
    ),
    "GET /containers/{internal_id}": (_CONTAINER, {404: "Container not found"}),
    "DELETE /containers/{internal_id}": (
        _object({"message": _TEXT, "freed": _list(_object(_KEY))}),
        {404: "Container not found", 409: "The container is being changed; try again later"},
    ),
    "POST /containers/{internal_id}/rebind-network": (
        _CONTAINER,
        {
            404: "Container not found",
            409: "A port is missing from the pool, taken or conflicting, or the container is being "
            "changed; it keeps its old ports",
        },
    ),
    "GET /api/v1/status": (_ANY_OBJECT, {}),
    "POST /api/v1/repair": (
        _object(
            {
                "message": _TEXT,
                "last_run": _TEXT,
                "findings": _list(_FINDING),
                "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
                "errors": {"type": "object", "additionalProperties": _TEXT},
            },
            {"firewall": {"type": ["object", "null"]}, "seconds": {"type": "number"}},
        ),
        {503: "lightd is stopping: no repair pass was run"},
    ),
    "GET /network/leases": (_object({"leases": _list(_LEASE)}), {503: _UNREAD}),
    "GET /network/leases/{lease_id}": (_LEASE, {404: _NO_LEASE, 503: _UNREAD}),
    "POST /network/leases/{lease_id}/renew": (_LEASE, {404: _NO_LEASE}),
    "DELETE /network/leases/{lease_id}": (
        _object({"message": _TEXT, "freed": _list(_ENTRY)}), {404: _NO_LEASE},
    ),
    "POST /network/leases/{lease_id}/keep": (
        _object({"message": _TEXT, "kept": _list(_ENTRY)}), {404: _NO_LEASE},
    ),
    "GET /network/events": (EVENT_STREAM_ANSWER, {}),
    "GET /network/firewall": (_ANY_OBJECT, {}),
    "POST /network/firewall/reconcile": (_object({"message": _TEXT}), {}),
}


def install_openapi(app: FastAPI) -> None:
    """Serve :func:`build_openapi`'s document at /openapi.json (built once, on first request)."""

    def openapi() -> Json:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def build_openapi(app: FastAPI) -> Json:
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for fastapi_only in ("HTTPValidationError", "ValidationError"):
        schemas.pop(fastapi_only, None)
    schemas["Error"] = ERROR_SCHEMA
    components["securitySchemes"] = {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "lightd_<token>",
            "description": "the token of config.json; the scheme's name in any case",
        },
    }
    # Late import: routes_pool imports the schemas, which take their fragments from here.
    from lightd.api.routes_pool import PAGE_MAX

    page: Json = {"type": "integer", "minimum": 0, "maximum": PAGE_MAX}
    known = {**PARAMETERS, ("query", "limit"): page, ("query", "offset"): page}
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            _document(f"{method.upper()} {path}", path not in PUBLIC_PATHS, operation, known)
    _whole_bounds(schemas)
    return schema


def _whole_bounds(node: Any) -> None:
    """Bounds of integers as integers: FastAPI's OpenAPI model types them as floats (1.0)."""
    if isinstance(node, dict):
        if node.get("type") == "integer":
            for bound in ("minimum", "maximum"):
                if isinstance(node.get(bound), float) and node[bound].is_integer():
                    node[bound] = int(node[bound])
        for child in node.values():
            _whole_bounds(child)
    elif isinstance(node, list):
        for child in node:
            _whole_bounds(child)


def _document(name: str, guarded: bool, operation: Json, known: dict[tuple[str, str], Json]) -> None:
    if name not in OPERATIONS:
        raise LookupError(f"{name} is not documented: add it to lightd.api.openapi.OPERATIONS")
    success, own = OPERATIONS[name]
    parameters = [_parameter(p, known) for p in operation.get("parameters", [])]
    body = operation.get("requestBody")
    if body is not None:
        _body(body)
    method = name.split()[0]
    errors: dict[int, str] = {}
    # The guard reads every POST and PUT body as JSON, also on routes that take none.
    if parameters or body is not None or (guarded and method in ("POST", "PUT")):
        errors[400] = _INVALID
    if guarded:
        operation["security"] = [{"bearer": []}]
        parameters.append(_accept_parameter())
        errors.update(_GUARD)
    else:
        operation["security"] = []
    errors.update(_EVERY_ROUTE)
    errors.update(own)
    # Any route can be one connection too many; a change, or a read of the pool, can also fail.
    reason = own.get(503) or (_UNSAVED if guarded and method != "GET" else None)
    errors[503] = _BUSY if reason is None else f"{reason}; or {_BUSY.lower()}"
    if parameters:
        operation["parameters"] = parameters
    responses = operation.setdefault("responses", {})
    responses.pop("422", None)
    for status, answer in responses.items():
        if status.startswith("2") and success is not EVENT_STREAM_ANSWER:
            answer["content"] = {"application/json": {"schema": copy.deepcopy(success)}}
    for status, description in sorted(errors.items()):
        responses[str(status)] = _error_response(status, description)


def _parameter(parameter: Json, known: dict[tuple[str, str], Json]) -> Json:
    schema = known.get((parameter.get("in", ""), parameter.get("name", "")))
    if schema is None:
        return parameter
    return {**parameter, "schema": copy.deepcopy(schema)}


def _body(body: Json) -> None:
    """An optional body (claim's) is documented as optional, not as a JSON ``null``: lightd
    refuses a body of ``null`` with 400 on every route."""
    for media in body.get("content", {}).values():
        variants = media.get("schema", {}).get("anyOf")
        if variants is not None and {"type": "null"} in variants:
            rest = [v for v in variants if v != {"type": "null"}]
            media["schema"] = rest[0] if len(rest) == 1 else {"anyOf": rest}
            body["required"] = False


def _accept_parameter() -> Json:
    # OpenAPI says tools ignore a header parameter named Accept (Swagger UI does, and sends the
    # response's media type instead); it is here so that readers, and schemathesis, see the rule.
    return {
        "name": "Accept",
        "in": "header",
        "required": True,
        "description": f"must list {VENDOR_MEDIA_TYPE} (any case), else 406",
        "schema": {"type": "string", "enum": [VENDOR_MEDIA_TYPE]},
    }


def _error_response(status: int, description: str) -> Json:
    answer: Json = {"description": description, "content": {"application/json": {"schema": dict(ERROR_REF)}}}
    if status == 401:
        answer["headers"] = {
            "WWW-Authenticate": {"description": "Bearer", "required": True, "schema": {"type": "string"}}
        }
    return answer
