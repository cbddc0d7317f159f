"""The seed's port binding workflow under /containers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import FastAPI
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, model_validator
from starlette.responses import Response

from lightd.api import openapi
from lightd.api.responses import json_response
from lightd.api.schemas import Ip, Port, Protocol, value_error
from lightd.core.containers import Container, parse_internal_id
from lightd.core.entry import parse_port
from lightd.errors import InvalidInput, quoted
from lightd.service.containers import ContainerService, PortRequest

__all__ = ["add_container_routes"]

InternalId = Annotated[
    str, value_error(parse_internal_id), WithJsonSchema(openapi.INTERNAL_ID_SCHEMA)
]
ContainerPort = Annotated[
    int, value_error(lambda v: parse_port(v, "container_port")), WithJsonSchema(openapi.PORT_SCHEMA)
]


def _no_nul(value: str) -> str:
    # The engine hands these to execve and the environment, where NUL ends a string.
    if "\0" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _command(value: Any) -> Any:
    """A command line as one string, or its words as an array of strings."""
    words = value if isinstance(value, list) else [value]
    if value is not None:
        for index, word in enumerate(words):
            where = f"startup_command[{index}]" if isinstance(value, list) else "startup_command"
            if not isinstance(word, str):
                raise InvalidInput(f"{where} must be a string, or an array of strings")
            if "\0" in word:
                raise InvalidInput(f"{where} must not contain NUL characters")
    return value


def _env(values: dict[str, str]) -> dict[str, str]:
    for key, value in values.items():
        if not key or "=" in key or "\0" in key:
            raise ValueError(
                f"keys must be non-empty names without '=' or NUL (got {quoted(key)})"
            )
        if "\0" in value:
            raise ValueError(f"value of {quoted(key)} must not contain NUL characters")
    return values


Text = Annotated[str, AfterValidator(_no_nul)]


class PortBinding(BaseModel):
    """A pool entry (``ip`` and ``port``), or a request for any free one (``container_port``)."""

    model_config = ConfigDict(extra="ignore", json_schema_extra=openapi.PORT_BINDING_RULE)
    ip: Ip | None = None
    port: Port | None = None
    protocol: Protocol = "tcp"
    container_port: ContainerPort | None = None

    @model_validator(mode="after")
    def port_or_container_port(self) -> PortBinding:
        if self.port is None and self.container_port is None:
            raise ValueError("needs port (a pool entry) or container_port (any free port)")
        return self

    def request(self) -> PortRequest:
        return PortRequest(self.protocol, self.ip, self.port, self.container_port)


class CreateContainer(BaseModel):
    model_config = ConfigDict(extra="ignore")
    internal_id: InternalId
    image: Annotated[
        Text, Field(min_length=1, max_length=512), WithJsonSchema(openapi.IMAGE_SCHEMA)
    ]
    startup_command: Annotated[
        list[str] | str | None, value_error(_command), WithJsonSchema(openapi.COMMAND_SCHEMA)
    ] = None
    env: Annotated[
        dict[str, str], AfterValidator(_env), WithJsonSchema(openapi.ENV_SCHEMA)
    ] = Field(default_factory=dict)
    ports: list[PortBinding] = Field(default_factory=list, max_length=1024)


class Rebind(BaseModel):
    model_config = ConfigDict(extra="ignore")
    ports: list[PortBinding] = Field(max_length=1024)


def container_out(container: Container, live: Mapping[str, Any] | None = None) -> dict[str, Any]:
    shown = container.public_json()
    # engine_state after engine_id, where the answers have always had it.
    order = ("internal_id", "image", "state", "engine_id")
    return {
        **{key: shown[key] for key in order},
        "engine_state": None if live is None else live.get("state"),
        **{key: value for key, value in shown.items() if key not in order},
    }


def add_container_routes(app: FastAPI, service: ContainerService) -> None:
    tags: list[Any] = ["containers"]

    @app.post("/containers", status_code=201, tags=tags,
              summary="Create a container on pool ports (all claimed, or none)")
    async def create(body: CreateContainer) -> Response:
        container = await service.create(
            body.internal_id, body.image, [p.request() for p in body.ports],
            body.startup_command, body.env,
        )
        return json_response({"message": "Container created", **container_out(container)}, 201)

    @app.get("/containers", tags=tags, summary="Every container lightd manages")
    async def list_containers() -> Response:
        containers = sorted(service.containers.values(), key=lambda c: c.internal_id)
        return json_response({"containers": [container_out(c) for c in containers]})

    @app.get("/containers/{internal_id}", tags=tags, summary="One container, with its live state")
    async def get(internal_id: str) -> Response:
        internal_id = parse_internal_id(internal_id)
        container = service.get(internal_id)
        return json_response(container_out(container, await service.inspect(internal_id)))

    @app.delete("/containers/{internal_id}", tags=tags,
                summary="Remove the container and free its ports")
    async def delete(internal_id: str) -> Response:
        freed = await service.delete(parse_internal_id(internal_id))
        return json_response({
            "message": "Container deleted",
            "freed": [{"ip": e.ip, "port": e.port, "protocol": e.protocol} for e in freed],
        })

    @app.post("/containers/{internal_id}/rebind-network", tags=tags,
              summary="Move the container to other ports: new claimed, old freed, or nothing")
    async def rebind(internal_id: str, body: Rebind) -> Response:
        internal_id = parse_internal_id(internal_id)
        service.get(internal_id)  # 404 before any validation of the ports against the pool
        container = await service.rebind(internal_id, [p.request() for p in body.ports])
        return json_response({"message": "Container network rebound", **container_out(container)})
