"""HTTP routes read from the contracts: each RPC's google.api.http annotation, and JSON <-> proto.

Nothing here knows a qruntime message: the routes, the fields a path or query sets and the JSON
mapping all come from the descriptors of the generated modules (every `*_pb2` module under the
`qruntime` package), so a service or field added to proto/ and annotated is served without a change
here. The OpenAPI document (openapi.py) is generated from the same routes.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import pkgutil
import re
from collections.abc import Iterator, Mapping

import qruntime
from google.api import annotations_pb2, http_pb2
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from qruntime_kit.auth import INTERNAL_METHODS
from qruntime_kit.errors import InvalidArgument

_VERBS = ("get", "put", "post", "delete", "patch")
# The Qiskit Runtime REST API names some request fields its own way: those names are accepted too
# (a JSON value given for a string field is stored as its JSON text), and documented (openapi.py).
ALIASES: Mapping[str, Mapping[str, str]] = {
    "qruntime.jobs.v1.CreateJobRequest": {"backend": "options.backend_name", "params": "inputs"},
}
# Server-streaming methods a client may resume, as server-sent events do with Last-Event-ID: the request
# field saying where to resume, and (the repeated field of each streamed message, the number field of
# its items) whose largest value is the message's event id.
RESUMABLE: Mapping[str, tuple[str, str, str]] = {
    "qruntime.jobs.v1.JobsService.WatchJob": ("after_sequence", "events", "sequence"),
}
# "{field}" or "{field=pattern}" in a path template (google/api/http.proto's grammar).
_VARIABLE = re.compile(r"\{([a-zA-Z_][\w.]*)(?:=([^}]*))?\}")


@dataclasses.dataclass(frozen=True)
class Route:
    """One HTTP binding of one RPC."""

    method: MethodDescriptor
    verb: str  # "GET", "POST", ...
    template: str  # as annotated: "/api/v1/jobs/{job_id}"
    body: str  # "" (none), "*" (the whole request) or the request field the body fills
    variables: tuple[str, ...]  # the request fields the path sets, in order ("program.id")

    @property
    def grpc_path(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def streaming(self) -> bool:
        return self.method.server_streaming

    @property
    def resume(self) -> tuple[str, str, str] | None:
        """RESUMABLE's entry for this route's method, if any."""
        return RESUMABLE.get(self.method.full_name)

    def event_id(self, message: Message) -> int | None:
        """The server-sent event id of a streamed message of a resumable route (its items' largest
        number), or None."""
        if self.resume is None:
            return None
        _, items, number = self.resume
        return max((getattr(item, number) for item in getattr(message, items)), default=None)

    def aiohttp_path(self) -> str:
        """The template in aiohttp's syntax: {v0}, {v1:regex}, ... (field paths may hold dots)."""
        index = iter(range(len(self.variables)))

        def variable(match: re.Match) -> str:
            pattern = match.group(2)
            name = f"v{next(index)}"
            if not pattern or pattern == "*":
                return "{" + name + "}"
            regex = "/".join("[^/]+" if s == "*" else ".+" if s == "**" else re.escape(s) for s in pattern.split("/"))
            return "{" + name + ":" + regex + "}"

        return _VARIABLE.sub(variable, self.template)

    def openapi_path(self) -> str:
        return _VARIABLE.sub(lambda m: "{" + m.group(1) + "}", self.template)

    def request_class(self) -> type[Message]:
        return GetMessageClass(self.method.input_type)

    def response_class(self) -> type[Message]:
        return GetMessageClass(self.method.output_type)


def _generated_modules() -> Iterator:
    for info in pkgutil.walk_packages(qruntime.__path__, "qruntime."):
        if info.name.endswith("_pb2"):
            yield importlib.import_module(info.name)


def _bindings(rule: http_pb2.HttpRule) -> Iterator[tuple[str, str, str]]:
    for rule_ in (rule, *rule.additional_bindings):
        verb = rule_.WhichOneof("pattern")
        if verb in _VERBS:
            yield verb.upper(), getattr(rule_, verb), rule_.body


def routes() -> list[Route]:
    """Every annotated binding of every qruntime service, internal methods excepted, in a stable order."""
    found = []
    for module in _generated_modules():
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                options = method.GetOptions()
                if not options.HasExtension(annotations_pb2.http) or method.client_streaming:
                    continue
                if f"/{service.full_name}/{method.name}" in INTERNAL_METHODS:
                    continue
                for verb, template, body in _bindings(options.Extensions[annotations_pb2.http]):
                    variables = tuple(m.group(1) for m in _VARIABLE.finditer(template))
                    found.append(Route(method, verb, template, body, variables))
    return sorted(found, key=lambda r: (r.template, r.verb))


def field_at(descriptor: Descriptor, path: str) -> FieldDescriptor | None:
    """The field a dotted path names ("program.id"), or None."""
    field = None
    for part in path.split("."):
        if descriptor is None:
            return None
        field = descriptor.fields_by_name.get(part)
        if field is None:
            return None
        descriptor = field.message_type
    return field


def _set(tree: dict, path: str, value) -> None:
    *parents, leaf = path.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[leaf] = value


def _text_value(field: FieldDescriptor, text: str):
    """A path or query value in the JSON form json_format parses for this field."""
    if field.type == FieldDescriptor.TYPE_BOOL:
        lowered = text.lower()
        if lowered not in ("true", "false", "1", "0"):
            raise InvalidArgument(f"{field.name} must be true or false, not {text!r}", reason="INVALID_PARAMETER",
                                  field_violations=[(field.name, "true or false")])
        return lowered in ("true", "1")
    return text  # numbers, enum names or numbers, timestamps, durations, field masks: json_format reads text


def build_request(route: Route, path_values: Mapping[str, str], query: Mapping[str, list[str]],
                  body: bytes) -> Message:
    """The request message of an HTTP call: body, then query parameters, then path variables."""
    descriptor = route.method.input_type
    tree: dict = {}
    if route.body:
        try:
            document = json.loads(body or b"{}")
        except (ValueError, UnicodeDecodeError) as err:
            raise InvalidArgument(f"the request body is not JSON: {err}", reason="INVALID_JSON") from None
        if route.body == "*":
            if not isinstance(document, dict):
                raise InvalidArgument("the request body must be a JSON object", reason="INVALID_JSON")
            tree = document
        else:
            tree[route.body] = document
        _apply_aliases(descriptor, tree)
    for name, values in query.items():
        field = field_at(descriptor, name)
        if field is None or route.body == "*" or name.split(".")[0] == route.body:
            raise InvalidArgument(f"unknown query parameter {name!r}", reason="UNKNOWN_PARAMETER",
                                  field_violations=[(name, "not a parameter of this call")])
        if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.full_name not in _TEXT_MESSAGES:
            raise InvalidArgument(f"{name!r} cannot be a query parameter", reason="UNKNOWN_PARAMETER",
                                  field_violations=[(name, "set its fields instead, as name.field")])
        converted = [_text_value(field, v) for v in values]
        _set(tree, name, converted if field.is_repeated else converted[-1])
    for name, value in path_values.items():
        _set(tree, name, _text_value(field_at(descriptor, name), value))
    request = route.request_class()()
    try:
        json_format.ParseDict(tree, request)
    except json_format.ParseError as err:
        raise InvalidArgument(f"the request does not fit {descriptor.name}: {err}", reason="INVALID_REQUEST") from None
    return request


# Well-known messages whose JSON form is one string, so a query parameter can carry them.
_TEXT_MESSAGES = frozenset({
    "google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask",
})


def _apply_aliases(descriptor: Descriptor, tree: dict) -> None:
    for alias, target in ALIASES.get(descriptor.full_name, {}).items():
        if alias not in tree:
            continue
        value = tree.pop(alias)
        if field_at(descriptor, target).type == FieldDescriptor.TYPE_STRING and not isinstance(value, str):
            value = json.dumps(value)
        _set(tree, target, value)


def to_json(message: Message) -> dict:
    """A message as JSON: proto field names (snake_case, as the Qiskit Runtime REST API writes them),
    fields at their default values included so a page sees every field."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)
