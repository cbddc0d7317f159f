"""The one error map: every lightd error has a status of its own, as the contract's table says."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

import lightd
from lightd import errors
from lightd.api.errors import STATUS_BY_ERROR, answer, status_of

CONTRACT = {
    "InvalidInput": 400,
    "Unauthorized": 401,
    "NotFound": 404,
    "PortNotFound": 404,
    "NotAcceptable": 406,
    "AlreadyExists": 409,
    "Conflict": 409,
    "Ambiguous": 409,
    "NoAvailablePorts": 409,
    "BodyTooLarge": 413,
    "StorageError": 503,
    "Unavailable": 503,
}


def error_classes() -> set[type[errors.LightdError]]:
    """Every LightdError subclass in lightd, after importing every module that may define one."""
    for module in pkgutil.walk_packages(lightd.__path__, "lightd."):
        importlib.import_module(module.name)
    found: set[type[errors.LightdError]] = set()
    todo = [errors.LightdError]
    while todo:
        for sub in todo.pop().__subclasses__():
            found.add(sub)
            todo.append(sub)
    return found


def test_every_class_of_the_error_tree_is_in_the_map():
    public = {getattr(errors, name) for name in errors.__all__}
    tree = {kind for kind in public if isinstance(kind, type) and issubclass(kind, errors.LightdError)}
    missing = {kind.__name__ for kind in tree if kind not in STATUS_BY_ERROR}
    assert not missing


def test_no_lightd_error_anywhere_falls_to_the_catch_all_500():
    for kind in error_classes():
        nearest = next(base for base in kind.__mro__ if base in STATUS_BY_ERROR)
        assert nearest is not errors.LightdError, kind


@pytest.mark.parametrize(("name", "status"), sorted(CONTRACT.items()))
def test_each_error_answers_the_contracts_status(name, status):
    assert status_of(getattr(errors, name)) == status


def test_framework_errors_and_bugs_end_in_the_same_lookup():
    assert answer(RequestValidationError([]), "GET", "/x").status == 400
    assert answer(HTTPException(405, headers={"Allow": "GET"}), "POST", "/x") == (
        405,
        {"error": "Method not allowed"},
        {"Allow": "GET"},
    )
    assert answer(RuntimeError("a bug"), "GET", "/x") == (500, {"error": "Internal error"}, {})
    assert answer(errors.Unauthorized(), "GET", "/x").headers == {"WWW-Authenticate": "Bearer"}


def test_an_error_message_that_is_not_valid_unicode_still_encodes():
    reply = answer(errors.InvalidInput("bad \ud800"), "GET", "/x")
    assert reply.encoded() == b'{"error":"bad \\\\ud800"}'
