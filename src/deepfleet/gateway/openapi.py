"""/openapi.json: what the gateway accepts and answers. The request schemas come from the same
msgspec structs that validate requests, so the document cannot drift from the code."""

from __future__ import annotations

from functools import cache
from typing import Any

import msgspec

from deepfleet.gateway.requests import MAX_N, ChatFields, CompletionFields

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string", "maxLength": 1024},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
ERRORS = {
    "400": "Invalid request (bad JSON, wrong types, values out of range, unknown Host)",
    "401": "Missing, invalid, revoked or expired API key",
    "403": "The key may not use this model",
    "404": "Unknown model",
    "408": "The request body did not arrive within the body deadline",
    "413": "Request body too large",
    "415": "The body is not declared as JSON (Content-Type: application/json)",
    "429": "Rate limit, key concurrency or queue full (see Retry-After)",
    "502": "The engine failed while answering",
    "503": "No ready replica or no capacity (see Retry-After)",
}


def _error_responses() -> dict[str, Any]:
    ref = {"$ref": "#/components/schemas/Error"}
    return {
        code: {"description": text, "content": {"application/json": {"schema": ref}}}
        for code, text in ERRORS.items()
    }


def _generation(name: str, summary: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "operationId": name,
            "security": [{"bearer": []}, {}],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}
                },
            },
            "responses": {
                "200": {
                    "description": "The engine's answer, or its SSE stream when stream=true",
                    "content": {
                        "application/json": {"schema": {"type": "object"}},
                        "text/event-stream": {"schema": {"type": "string"}},
                    },
                },
                **_error_responses(),
            },
        }
    }


@cache
def openapi_spec() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        (ChatFields, CompletionFields), ref_template="#/components/schemas/{name}"
    )
    for schema in components.values():
        schema["additionalProperties"] = True
        props = schema["properties"]
        props["n"] = {
            "anyOf": [{"type": "integer", "minimum": 1, "maximum": MAX_N}, {"type": "null"}]
        }
        props["max_tokens"] = {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}]}
        if "max_completion_tokens" in props:
            props["max_completion_tokens"] = props["max_tokens"]
        if "reasoning_cap" in props:
            props["reasoning_cap"] = props["max_tokens"]
    components["ChatFields"]["properties"]["messages"]["minItems"] = 1
    components["CompletionFields"]["properties"]["prompt"] = {
        "anyOf": [{"type": "string", "minLength": 1}, {"type": "array", "minItems": 1}]
    }
    models = {
        "type": "object",
        "required": ["object", "data"],
        "properties": {"object": {"type": "string"}, "data": {"type": "array"}},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "deepfleet gateway",
            "version": "1",
            "description": "OpenAI-compatible front door of a deepfleet fleet. Fields not "
            "listed are passed to the engine unchanged.",
        },
        "paths": {
            "/v1/chat/completions": _generation("ChatFields", "Chat completion"),
            "/v1/completions": _generation("CompletionFields", "Text completion"),
            "/v1/models": {
                "get": {
                    "summary": "Models served",
                    "operationId": "listModels",
                    "security": [{"bearer": []}, {}],
                    "responses": {
                        "200": {
                            "description": "Models",
                            "content": {"application/json": {"schema": models}},
                        },
                        "401": _error_responses()["401"],
                    },
                }
            },
            "/health": {
                "get": {
                    "summary": "Gateway liveness",
                    "operationId": "health",
                    "responses": {
                        "200": {
                            "description": "Alive",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "schemas": {**components, "Error": ERROR_SCHEMA},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
