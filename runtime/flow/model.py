"""The flow language as pydantic models: the shape of a flow file, and its JSON Schema.

These models check *shape* (keys, types, ranges). Meaning (does a ``next`` lead anywhere? does a
template compile?) is checked in :mod:`.checks`, which knows where each value stands in the file.
Shorthands are accepted and normalised before validation, e.g. ``say: "Hi"`` is
``say: [{text: "Hi"}]`` and ``wait: 1h`` is ``wait: {for: 1h}``; the JSON Schema shows both forms.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
NODE_ID = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
FLOW_ID = r"^[a-z0-9][a-z0-9_-]*$"

def _exact_text(value: Any) -> Any:
    """Names and ids are text: an integer reads as its digits, but a float would lose some
    (YAML reads ``1.10`` as 1.1) and a boolean is surely a mistake."""
    if isinstance(value, bool) or isinstance(value, float):
        raise ValueError(f"YAML reads this as {value!r}: quote it to keep it as written")
    return str(value) if isinstance(value, int) else value


Text = Annotated[str, BeforeValidator(_exact_text)]
VarName = Annotated[Text, Field(pattern=NAME)]
NodeRef = Annotated[Text, Field(pattern=NODE_ID)]
FlowId = Annotated[Text, Field(pattern=FLOW_ID, max_length=64)]
Duration = Annotated[int | float | str, Field(description="seconds, or a duration such as 90s, 15m, 2h, 1d, 1h30m")]
Scalar = str | int | float | bool | None


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True,
                              coerce_numbers_to_str=True)


def _wrap(key: str):
    """A scalar given where a mapping is expected stands for ``{key: scalar}``."""
    def convert(value: Any) -> Any:
        return {key: value} if value is not None and not isinstance(value, (dict, list)) else value
    return convert


def _option_list(value: Any) -> Any:
    """``[Yes, No]`` stands for ``[{id: Yes, title: Yes}, {id: No, title: No}]``."""
    if isinstance(value, list):
        return [{"id": v, "title": v} if isinstance(v, (str, int, float)) else v for v in value]
    return value


def _messages(value: Any) -> Any:
    """``say`` takes a text, a message, or a list of either."""
    items = value if isinstance(value, list) else [value]
    return [{"text": v} if isinstance(v, (str, int, float)) else v for v in items]


class Option(Spec):
    """A button, list row or menu option. ``next`` is only meaningful in menus."""

    id: Annotated[Text, Field(min_length=1, max_length=256)]
    title: Annotated[Text | None, Field(max_length=256)] = None
    description: str | None = None
    next: NodeRef | None = None

    @property
    def label(self) -> str:
        return self.title if self.title is not None else self.id


Options = Annotated[list[Option], BeforeValidator(_option_list, json_schema_input_type=list[str | Option])]


class Media(Spec):
    url: str = Field(description="template of an http(s) URL")
    kind: Literal["image", "video", "audio", "document", "sticker"] = "image"
    filename: str | None = None


class ListSpec(Spec):
    """A list picker (WhatsApp list message, a select in the web chat)."""

    button: str = "Options"
    options: Options = Field(min_length=1)


class Message(Spec):
    """One outgoing message: text, with buttons or a list, or media with ``text`` as caption."""

    text: str | None = None
    buttons: Options | None = None
    list: ListSpec | None = None
    media: Annotated[Media | None, BeforeValidator(_wrap("url"), json_schema_input_type=str | Media | None)] = None


Messages = Annotated[list[Message],
                     BeforeValidator(_messages, json_schema_input_type=str | Message | list[str | Message])]
Prompt = Annotated[Message, BeforeValidator(_wrap("text"), json_schema_input_type=str | Message)]


class Length(Spec):
    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)


def _length(value: Any) -> Any:
    return {"min": value, "max": value} if isinstance(value, int) and not isinstance(value, bool) else value


class Validate(Spec):
    """How an ``ask`` checks an answer. ``regex`` applies to the raw text, before ``type``."""

    type: Literal["text", "integer", "number", "email", "phone", "date", "choice"] = "text"
    regex: str | None = None
    min: int | float | str | None = Field(default=None, description="number bound, or a date: ISO, today, today+7")
    max: int | float | str | None = None
    length: Annotated[Length | None, BeforeValidator(_length, json_schema_input_type=int | Length | None)] = None
    choices: Options | None = None
    error: str | None = Field(default=None, description="template sent when the answer is refused")
    region: Annotated[str | None, Field(pattern=r"^[A-Z]{2}$")] = Field(
        default=None, description="phone: the country assumed when the number has no +prefix")
    formats: list[str] | None = Field(default=None, description="date: strptime formats to accept")


class MenuSpec(Spec):
    """Options as buttons, answered by id, by title, or by the option's number."""

    use: NodeRef | None = Field(default=None, description="name of a menu under the flow's `menus`")
    text: str | None = None
    options: Options | None = None
    invalid: str | None = None


class Case(Spec):
    if_: str | None = Field(default=None, alias="if")
    next: NodeRef | None = None
    else_: NodeRef | None = Field(default=None, alias="else")


class SecretRef(Spec):
    """A secret by name, resolved by the runtime when the request is sent; never in templates."""

    secret: Annotated[str, Field(pattern=NAME)]
    prefix: str = ""


HeaderValue = str | SecretRef


class HttpSpec(Spec):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET"
    url: str
    headers: dict[str, HeaderValue] = {}
    query: dict[str, HeaderValue] = {}
    json_: Any = Field(default=None, alias="json")
    form: dict[str, str] | None = None
    body: str | None = None
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    retries: int = Field(default=0, ge=0, le=10)
    save: VarName | None = None
    map: dict[VarName, str] = Field(default={}, description="variables from expressions over `response`")
    on_error: NodeRef | None = None


class HandoffSpec(Spec):
    reason: str = ""
    queue: str | None = None


class WaitSpec(Spec):
    """Pause: ``for`` a duration, ``at`` a time (a template giving an ISO date-time), or
    ``until: reply`` (with the node's ``timeout_s`` / ``on_timeout``)."""

    for_: Duration | None = Field(default=None, alias="for")
    at: str | None = None
    until: Literal["reply"] | None = None


def _wait(value: Any) -> Any:
    if value == "reply":
        return {"until": "reply"}
    return _wrap("for")(value)


class GotoSpec(Spec):
    node: NodeRef | None = None
    flow: FlowId | None = None
    return_: bool = Field(default=False, alias="return",
                          description="come back to this node's `next` when the other flow ends")


class Trigger(Spec):
    keyword: Annotated[list[str] | None, BeforeValidator(lambda v: [v] if isinstance(v, str) else v,
                                                         json_schema_input_type=str | list[str] | None)] = None
    regex: str | None = None
    default: bool | None = None
    channels: list[str] | None = Field(default=None, description="only on these channels")


class Node(Spec):
    """A step. It runs ``set``, then ``say``, then its one action, then goes to ``next``."""

    set: dict[VarName, Scalar] | None = None
    say: Messages | None = None
    ask: Prompt | None = None
    menu: Annotated[MenuSpec | None, BeforeValidator(_wrap("use"), json_schema_input_type=str | MenuSpec | None)] = None
    branch: list[Case] | None = None
    http: HttpSpec | None = None
    handoff: Annotated[HandoffSpec | None, BeforeValidator(
        lambda v: {} if v is True else _wrap("reason")(v),
        json_schema_input_type=bool | str | HandoffSpec | None)] = None
    wait: Annotated[WaitSpec | None, BeforeValidator(_wait, json_schema_input_type=Duration | WaitSpec | None)] = None
    goto: Annotated[GotoSpec | None,
                    BeforeValidator(_wrap("node"), json_schema_input_type=str | GotoSpec | None)] = None
    end: bool = False
    next: NodeRef | None = None
    save: VarName | None = None
    validate_: Validate | None = Field(default=None, alias="validate")
    retries: int | None = Field(default=None, ge=0, le=100)
    on_fail: NodeRef | None = None
    on_error: NodeRef | None = None
    timeout_s: float | None = Field(default=None, gt=0)
    on_timeout: NodeRef | None = None
    note: str | None = Field(default=None, description="free text for the flow's authors")


ACTIONS = ("ask", "menu", "branch", "http", "handoff", "wait", "goto", "end")


class FlowSpec(Spec):
    """A flow file."""

    flow: FlowId
    description: str = ""
    version: Text | None = Field(default=None, description="a label; by default a hash of the source")
    isolation: Literal["shared", "dedicated"] = "shared"
    triggers: list[Trigger] = []
    vars: dict[VarName, Any] = {}
    commands: dict[str, NodeRef] = Field(default={}, description="words that jump to a node at any step")
    menus: dict[NodeRef, MenuSpec] = {}
    start: NodeRef
    on_error: NodeRef | None = Field(default=None, description="where run-time errors go by default")
    max_steps: int = Field(default=100, ge=1, le=1_000, description="nodes one turn may run")
    nodes: dict[NodeRef, Node] = Field(min_length=1)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of flow files, for editors (``parlour flows schema``)."""
    schema = FlowSpec.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "parlour flow"
    return schema
