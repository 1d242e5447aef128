"""The OpenAPI 3 document of the HTTP/JSON API, generated from the same routes the front door serves.

Paths and operations are the routes of transcoding.routes(); schemas are the request and response
messages in their JSON mapping (proto field names, 64-bit integers as strings, enums by name, the
well-known types as their JSON forms); descriptions are the .proto files' comments. Nothing is
written by hand: scripts/gen_openapi.py writes it to services/suite/web/openapi.json, and CI fails
when the committed document differs from a fresh one.
"""

from __future__ import annotations

from collections.abc import Mapping

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from qruntime_auth.component import AuthComponent

from .transcoding import ALIASES, Route, field_at

T = FieldDescriptor
_SCALARS = {
    T.TYPE_STRING: {"type": "string"}, T.TYPE_BYTES: {"type": "string", "format": "byte"},
    T.TYPE_BOOL: {"type": "boolean"}, T.TYPE_DOUBLE: {"type": "number", "format": "double"},
    T.TYPE_FLOAT: {"type": "number", "format": "float"},
    T.TYPE_INT32: {"type": "integer", "format": "int32"}, T.TYPE_SINT32: {"type": "integer", "format": "int32"},
    T.TYPE_SFIXED32: {"type": "integer", "format": "int32"}, T.TYPE_UINT32: {"type": "integer", "format": "int64"},
    T.TYPE_FIXED32: {"type": "integer", "format": "int64"},
    # proto3's JSON mapping writes 64-bit integers as strings (JavaScript's numbers hold 53 bits).
    T.TYPE_INT64: {"type": "string", "format": "int64"}, T.TYPE_SINT64: {"type": "string", "format": "int64"},
    T.TYPE_SFIXED64: {"type": "string", "format": "int64"}, T.TYPE_UINT64: {"type": "string", "format": "uint64"},
    T.TYPE_FIXED64: {"type": "string", "format": "uint64"},
}
_WELL_KNOWN = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "description": "seconds with an s suffix, e.g. \"1.5s\""},
    "google.protobuf.FieldMask": {"type": "string", "description": "field paths separated by commas"},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
}
ERROR_SCHEMA = {
    "type": "object", "required": ["error"],
    "description": "An error: the HTTP status of its gRPC code, and the reason and details the service gave.",
    "properties": {"error": {"type": "object", "required": ["code", "status", "message", "reason"], "properties": {
        "code": {"type": "integer", "description": "The HTTP status."},
        "status": {"type": "string", "description": "The gRPC status code's name, e.g. NOT_FOUND."},
        "message": {"type": "string", "description": "What went wrong, for people."},
        "reason": {"type": "string", "description": "Stable UPPER_SNAKE reason, e.g. JOB_NOT_FOUND."},
        "domain": {"type": "string", "description": "The service that gave it, e.g. jobs.qruntime."},
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
        "field_violations": {"type": "array", "items": {"type": "object", "properties": {
            "field": {"type": "string"}, "description": {"type": "string"}}}},
        "retry_after_seconds": {"type": "number", "description": "When to try again (429)."},
    }}},
}
TOKEN_SCHEMA = {
    "type": "object", "description": "IBM Cloud IAM's token response.",
    "properties": {
        "access_token": {"type": "string", "description": "Send as 'Authorization: Bearer <access_token>'."},
        "token_type": {"type": "string", "enum": ["Bearer"]},
        "expires_in": {"type": "integer", "description": "Seconds until the token expires."},
        "expiration": {"type": "integer", "description": "When it expires, in seconds since the Unix epoch."},
        "scope": {"type": "string"},
        "instance": {"type": "object", "description": "The instance the token is scoped to (empty: an account token)."},
    },
}


def _ref(full_name: str) -> dict:
    return {"$ref": f"#/components/schemas/{full_name}"}


class _Schemas:
    """Collects the schema of each message and enum reached from the routes."""

    def __init__(self, comments: Mapping[str, str]) -> None:
        self.comments = comments
        self.schemas: dict[str, dict] = {}

    def _described(self, schema: dict, full_name: str) -> dict:
        if self.comments.get(full_name):
            schema = {**schema, "description": self.comments[full_name]}
        return schema

    def enum(self, enum: EnumDescriptor) -> dict:
        if enum.full_name not in self.schemas:
            values = "\n".join(f"- {v.name}: {self.comments.get(f'{enum.full_name}.{v.name}', '')}"
                               for v in enum.values)
            text = self.comments.get(enum.full_name, "")
            self.schemas[enum.full_name] = {"type": "string", "enum": [v.name for v in enum.values],
                                            "description": f"{text}\n\n{values}".strip()}
        return _ref(enum.full_name)

    def field(self, field: FieldDescriptor) -> dict:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value = field.message_type.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self.field(value)}
        if field.type == T.TYPE_MESSAGE:
            item = self.message(field.message_type)
        elif field.type == T.TYPE_ENUM:
            item = self.enum(field.enum_type)
        else:
            item = dict(_SCALARS[field.type])
        return {"type": "array", "items": item} if field.is_repeated else item

    def message(self, message: Descriptor) -> dict:
        if message.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[message.full_name])
        if message.full_name not in self.schemas:
            self.schemas[message.full_name] = {}  # reserved first: messages may nest themselves
            properties = {}
            for field in message.fields:
                schema = self.field(field)
                text = self.comments.get(f"{message.full_name}.{field.name}", "")
                # A $ref takes no siblings in OpenAPI 3.0: wrap it to carry the field's own description.
                properties[field.name] = ({"allOf": [schema], "description": text} if "$ref" in schema
                                          else {**schema, "description": text}) if text else schema
            for alias, target in ALIASES.get(message.full_name, {}).items():
                kind = field_at(message, target)
                properties[alias] = {"description": f"Same as {target} (the Qiskit Runtime REST API's name)"
                                     + ("; a value other than a string is stored as its JSON text."
                                        if kind.type == T.TYPE_STRING else ".")}
            self.schemas[message.full_name] = self._described(
                {"type": "object", "properties": properties, "additionalProperties": False}, message.full_name)
        return _ref(message.full_name)


def _operation(route: Route, schemas: _Schemas, operation_ids: set[str]) -> dict:
    method = route.method
    name = f"{method.containing_service.name}_{method.name}"
    operation_id = name if name not in operation_ids else f"{name}_{len(operation_ids)}"
    operation_ids.add(operation_id)
    tag = method.containing_service.name
    parameters = [{"name": v, "in": "path", "required": True, "schema": schemas.field(field_at(method.input_type, v))}
                  for v in route.variables]
    if route.body != "*":
        for field in method.input_type.fields:
            if field.name in route.variables or field.name == route.body:
                continue
            if field.type == T.TYPE_MESSAGE and field.message_type.full_name not in _WELL_KNOWN:
                continue  # only scalar fields travel in a query string here
            schema = schemas.field(field)
            parameters.append({"name": field.name, "in": "query", "required": False, "schema": schema,
                               "description": schemas.comments.get(f"{method.input_type.full_name}.{field.name}", ""),
                               **({"style": "form", "explode": True} if field.is_repeated else {})})
    response = schemas.message(method.output_type)
    resume = route.resume
    success = ({"text/event-stream": {"schema": {"type": "string", "description": (
        "Server-sent events: one `data:` line per message, each a JSON " + method.output_type.name
        + (f", numbered by an `id:` line (the largest {resume[1]}[].{resume[2]}); reconnecting with that id "
           f"as the Last-Event-ID header resumes after it" if resume else "")
        + "; `event: end` after the last one, `event: error` with an error body if the stream fails; "
          "a `: keep-alive` comment line while nothing else comes for 15 s.")}}}
        if route.streaming else {"application/json": {"schema": response}})
    if resume:
        parameters.append({"name": "Last-Event-ID", "in": "header", "required": False,
                           "schema": {"type": "string", "pattern": "^[0-9]+$"},
                           "description": f"Resume after this event id (sets {resume[0]} when larger)."})
    operation = {
        "operationId": operation_id, "tags": [tag],
        "summary": schemas.comments.get(f"{method.containing_service.full_name}.{method.name}", "").split("\n")[0],
        "description": schemas.comments.get(f"{method.containing_service.full_name}.{method.name}", "")
        + f"\n\ngRPC: `{route.grpc_path}`",
        "parameters": parameters,
        "responses": {"200": {"description": method.output_type.name, "content": success},
                      "default": {"description": "An error.",
                                  "content": {"application/json": {"schema": _ref("Error")}}}},
    }
    if route.grpc_path in AuthComponent.public_methods:
        operation["security"] = []  # needs no token
    if route.body:
        body_schema = (schemas.message(method.input_type) if route.body == "*"
                       else schemas.field(field_at(method.input_type, route.body)))
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body_schema}}}
    return operation


def document(routes: list[Route], comments: Mapping[str, str], version: str) -> dict:
    """The OpenAPI 3.0 document of these routes."""
    schemas = _Schemas(comments)
    paths: dict[str, dict] = {}
    operation_ids: set[str] = set()
    for route in routes:
        paths.setdefault(route.openapi_path(), {})[route.verb.lower()] = _operation(route, schemas, operation_ids)
    paths["/identity/token"] = {"post": {
        "operationId": "IdentityToken", "tags": ["Identity"], "security": [],
        "summary": "Exchanges an API key for a bearer token, as IBM Cloud IAM does.",
        "description": "Form-encoded. The API key alone gives a token for your account (name one with "
                       "`account` if you belong to several): it serves the admin API, and every instance of "
                       "your accounts you have a role on, named per call in the Service-CRN header. With "
                       "`instance` (or a Service-CRN header here) the token is for that instance only.",
        "parameters": [{"name": "Service-CRN", "in": "header", "required": False, "schema": {"type": "string"}}],
        "requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
            "type": "object", "required": ["grant_type", "apikey"], "properties": {
                "grant_type": {"type": "string", "enum": ["urn:ibm:params:oauth:grant-type:apikey"]},
                "apikey": {"type": "string", "description": "Your API key."},
                "instance": {"type": "string", "description": "For a token of one instance: its CRN or name."},
                "account": {"type": "string", "description": "The account id, if you belong to several."}}}}}},
        "responses": {"200": {"description": "The token.",
                              "content": {"application/json": {"schema": _ref("IdentityToken")}}},
                      "default": {"description": "An error.",
                                  "content": {"application/json": {"schema": _ref("Error")}}}},
    }}
    # The users' services first, the administrators' last; each with its .proto comment.
    services = {}
    for route in sorted(routes, key=lambda r: (r.template.startswith("/api/v1/admin/"), r.template)):
        service = route.method.containing_service
        services.setdefault(service.name, comments.get(service.full_name, ""))
    tags = [{"name": "Identity", "description": "IBM Cloud IAM's token exchange."},
            *({"name": name, "description": text} for name, text in services.items())]
    return {
        "openapi": "3.0.3",
        "tags": tags,
        "info": {"title": "qruntime REST API", "version": version, "description": (
            "The HTTP/JSON form of qruntime's gRPC services, transcoded from their google.api.http "
            "annotations. Sign in with POST /identity/token, then send `Authorization: Bearer <token>` "
            "and name the instance in `Service-CRN: <instance CRN or name>` (the admin API needs none).")},
        "servers": [{"url": "/"}],
        "security": [{"bearer": [], "serviceCrn": []}, {"bearer": []}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "serviceCrn": {"type": "apiKey", "in": "header", "name": "Service-CRN",
                               "description": "The instance a call is for, by CRN or name."}},
            "schemas": dict(sorted({**schemas.schemas, "Error": ERROR_SCHEMA, "IdentityToken": TOKEN_SCHEMA}.items())),
        },
    }
