"""schemathesis against /openapi.json: whatever it sends, the service never answers 5xx.

Driven through plain hypothesis (one test per operation) rather than schemathesis' pytest plugin."""

from __future__ import annotations

import shutil

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from lsr.service.openapi import openapi_document
from lsr.service.requests import Limits
from tests.service.conftest import API_KEY, make_app

OPERATIONS = [(path, method.upper()) for path, item in openapi_document(Limits())["paths"].items() for method in item]


@pytest.fixture(scope="module")
def fuzz_schema(served_index, tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "index"
    shutil.copytree(served_index, path)  # the fuzzer adds and deletes documents
    return schemathesis.openapi.from_wsgi("/openapi.json", make_app(path))


@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=[f"{m} {p}" for p, m in OPERATIONS])
def test_no_server_errors(fuzz_schema, path, method):
    operation = fuzz_schema[path][method]

    @given(case=operation.as_strategy())
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    def run(case):
        response = case.call(headers={"X-API-Key": API_KEY})
        case.validate_response(response, checks=[not_a_server_error])
        if response.status_code >= 400:
            assert "error" in response.json()  # every error is the JSON envelope

    run()
