"""Flow tests: YAML files of conversation steps, run in-process by ``parlour test``.

A test file (by convention ``NAME.test.yaml``; told by its top-level ``steps``) names a flow,
canned HTTP responses and the steps of one conversation; see docs/flows.md, "Testing flows".
Each step that fails reports its ``file:line:column``, what was expected, and the conversation
up to that point.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from .errors import FlowError, Problem
from .flow import (
    Catalog,
    Effect,
    End,
    Error,
    Forward,
    Handoff,
    HttpRequest,
    HttpResult,
    Send,
    Start,
    Unhandled,
    UserMessage,
    load_paths,
)
from .flow.compiler import parse_duration
from .flow.loader import candidate_files, is_flow_test, translate
from .flow.source import SourceMap, read_source
from .session import Session


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


class Canned(_Spec):
    status: int = 200
    json_: Any = Field(default=None, alias="json")
    text: str | None = None
    headers: dict[str, str] = {}
    error: str | None = Field(default=None, description="no response at all: a timeout, a refused connection")


def _pattern(text: str | None) -> str | None:
    if text is not None and text.startswith("re:"):
        try:
            re.compile(text[3:])
        except re.error as exc:
            raise ValueError(f"the regular expression does not compile: {exc}") from None
    return text


def _duration(value: int | float | str | None) -> int | float | str | None:
    if value is not None:
        parse_duration(value)  # raises ValueError with a readable reason
    return value


def _utc(moment: datetime) -> datetime:
    """A clock start without a zone is UTC, as everywhere in parlour (not the machine's zone)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Press(_Spec):
    """``press: {id: quit, prompt: p1}``: a button of the message whose prompt is ``p1``
    (the ids show in the transcript), to test what an old message's button does."""

    id: str = Field(min_length=1)
    prompt: str | None = Field(default=None, description="the prompt the button belongs to; default: the open one")


class Step(_Spec):
    user: str | None = None
    press: str | Press | None = Field(default=None, description="a button's id (of the open prompt), or {id, prompt}")
    bot: Annotated[str | None, AfterValidator(_pattern)] = Field(
        default=None, description="the next reply contains this; `re:` for a regex")
    buttons: list[str] | None = None
    vars: dict[str, Any] | None = None
    wait: Annotated[int | float | str | None, AfterValidator(_duration)] = None
    node: str | None = None
    status: Literal["idle", "waiting", "handoff", "ended", "failed"] | None = None
    handoff: bool | None = None
    no_reply: bool | None = None


class FlowTest(_Spec):
    flow: str
    description: str = ""
    env: dict[str, str] = {}
    http: dict[str, Canned] = {}
    now: Annotated[datetime, AfterValidator(_utc)] = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    user: dict[str, str] = {"id": "tester"}
    channel: str = "test"
    steps: list[Step] = Field(min_length=1)


class StepFailed(Exception):
    pass


@dataclass
class Outcome:
    path: str
    passed: bool
    steps: int = 0
    transcript: list[str] = field(default_factory=list)
    failure: Problem | None = None


def _key(request: HttpRequest) -> str:
    query = urlencode([(k, v) for k, v in request.query if isinstance(v, str)])
    return f"{request.method} {request.url}" + (f"?{query}" if query else "")


class _Runner:
    def __init__(self, test: FlowTest, catalog: Catalog, smap: SourceMap):
        self.test = test
        self.smap = smap
        self.session = Session(catalog, self.canned, now=test.now.timestamp())
        self.transcript: list[str] = []
        self.pending: list[Send] = []
        self.last_checked: Send | None = None
        self.handed_off = False
        user = test.user
        self.sender = UserMessage(user_id=user.get("id"), user_name=user.get("name"), channel=test.channel)

    async def canned(self, request: HttpRequest) -> HttpResult:
        key = _key(request)
        answer = self.test.http.get(key)
        if answer is None:
            known = ", ".join(self.test.http) or "none"
            raise StepFailed(f"no canned response for {key!r} (canned: {known})")
        self.transcript.append(f"   (http {key} -> {answer.error or answer.status})")
        return HttpResult(request.request_id, status=None if answer.error else answer.status,
                          json=answer.json_, text=answer.text, headers=answer.headers, error=answer.error)

    def record(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Send):
                self.pending.append(effect)
                reply = effect.reply
                choices = reply.buttons or reply.list
                shown = f"  [{' | '.join(f'{b.id}: {b.title}' for b in choices)}] ({reply.prompt})" if choices else ""
                self.transcript.append(f"bot> {reply.text or reply.media_url or ''}{shown}")
            elif isinstance(effect, Handoff):
                self.handed_off = True
                self.transcript.append(f"   (hand-off: {effect.reason})")
            elif isinstance(effect, End):
                self.transcript.append(f"   (end: flow {effect.flow!r} ended at node {effect.node!r})")
            elif isinstance(effect, Error | Unhandled):
                self.transcript.append(f"   ({effect.kind}: {effect.reason})")
            elif isinstance(effect, Forward):
                self.transcript.append(f"   ({effect.kind}: {effect.text})")

    async def say(self, msg: UserMessage, shown: str) -> None:
        self.pending.clear()
        self.last_checked = None
        self.handed_off = False
        self.transcript.append(f"you> {shown}")
        state = self.session.state
        event = Start(self.test.flow, message=msg) if state.status == "idle" else msg
        self.record(await self.session.send(event))

    async def step(self, step: Step) -> None:
        """Run one step (the file's loader has made sure it gives one thing); StepFailed if it
        checks something that is not so."""
        if step.user is not None:
            await self.say(replace(self.sender, text=step.user), step.user)
        elif step.press is not None:
            await self.press(step.press if isinstance(step.press, Press) else Press(id=step.press))
        elif step.wait is not None:
            seconds = parse_duration(step.wait)
            self.transcript.append(f"   (clock +{seconds:g} s)")
            self.record(await self.session.wait(seconds))
        else:
            self.check(step)

    async def press(self, pressed: Press) -> None:
        prompt = pressed.prompt or self.session.state.prompt
        await self.say(replace(self.sender, button=pressed.id, kind="button", prompt=prompt),
                       f"[{pressed.id}]" + (f" ({prompt})" if prompt else ""))

    def check(self, step: Step) -> None:
        state = self.session.state
        if step.bot is not None:
            self.check_bot(step.bot)
        elif step.buttons is not None:
            self.check_buttons(step.buttons)
        elif step.vars is not None:
            wrong = {k: state.vars.get(k, "<unset>") for k, v in step.vars.items() if state.vars.get(k, object()) != v}
            _expect(not wrong, f"expected vars {step.vars}, but {wrong}")
        elif step.node is not None:
            _expect(state.node == step.node, f"expected to be at node {step.node!r}, at {state.node!r}")
        elif step.status is not None:
            _expect(state.status == step.status, f"expected status {step.status!r}, it is {state.status!r}")
        elif step.handoff is not None:
            _expect(self.handed_off == step.handoff,
                    f"expected {'a' if step.handoff else 'no'} hand-off since the last message")
        elif step.no_reply is not None:
            self.check_no_reply(step.no_reply)
        else:
            raise StepFailed("an empty step: give one of user, press, bot, buttons, vars, wait, node, status, "
                             "handoff, no_reply")

    def check_buttons(self, expected: list[str]) -> None:
        checked = self.last_checked
        offered = [b.id for b in (checked.reply.buttons or checked.reply.list)] if checked else None
        _expect(offered == expected, f"expected buttons {expected}, the last reply checked offered {offered}")

    def check_no_reply(self, none: bool) -> None:
        if none and self.pending:
            raise StepFailed(f"expected no more replies, the bot said {self.pending[0].reply.text!r}")
        if not none and not self.pending:
            raise StepFailed("expected a reply not yet checked, but the bot said nothing more")

    def check_bot(self, expected: str) -> None:
        if not self.pending:
            raise StepFailed(f"expected a reply containing {expected!r}, but the bot said nothing more")
        reply = self.pending.pop(0)
        self.last_checked = reply
        text = reply.reply.text or ""
        if expected.startswith("re:"):
            if not re.search(expected[3:], text):
                raise StepFailed(f"expected a reply matching /{expected[3:]}/, got {text!r}")
        elif expected not in text:
            raise StepFailed(f"expected a reply containing {expected!r}, got {text!r}")


def _expect(holds: bool, otherwise: str) -> None:
    if not holds:
        raise StepFailed(otherwise)


def _given(step: Step) -> list[str]:
    return [name for name, value in step if value is not None]


async def run_file(path: str | Path, flows: list[str | Path] | None = None) -> Outcome:
    """Run one flow test file against the flows next to it (or ``flows``)."""
    path = Path(path)
    try:
        data, smap = read_source(path.read_text(encoding="utf-8"), str(path))
        test = FlowTest.model_validate(data)
    except FlowError as exc:
        return Outcome(str(path), False, failure=exc.problems[0], transcript=[str(p) for p in exc.problems[1:]])
    except ValidationError as exc:
        problems = translate(exc, smap, FlowTest)
        return Outcome(str(path), False, failure=problems[0], transcript=[str(p) for p in problems[1:]])
    except OSError as exc:
        return Outcome(str(path), False, failure=Problem(str(path), 1, 1, f"cannot read: {exc}"))
    loaded = load_paths(flows or [path.parent])
    if loaded.errors:
        return Outcome(str(path), False, failure=smap.problem(("flow",), "the flows do not load:"),
                       transcript=[str(p) for p in loaded.errors])
    catalog = Catalog(loaded.flows, env=test.env)
    if test.flow not in catalog:
        return Outcome(str(path), False, failure=smap.problem(
            ("flow",), f"no flow {test.flow!r} among {', '.join(f.id for f in catalog) or 'none'}"))
    runner = _Runner(test, catalog, smap)
    for index, step in enumerate(test.steps):
        loc = ("steps", index)
        if len(_given(step)) > 1:
            return Outcome(str(path), False, index, runner.transcript,
                           smap.problem(loc, f"one thing per step; this one has {', '.join(_given(step))}"))
        try:
            await runner.step(step)
        except StepFailed as exc:
            kind = _given(step)[0] if _given(step) else "step"
            return Outcome(str(path), False, index, runner.transcript,
                           smap.problem(loc, f"step {index + 1} ({kind}): {exc}"))
    return Outcome(str(path), True, len(test.steps), runner.transcript)


def find_test_files(paths: list[str | Path]) -> list[Path]:
    """The test files under ``paths``: files as given; in directories, every YAML or JSON file
    whose content is a flow test (:func:`~parlour.flow.loader.is_flow_test`), whatever its name."""
    return [path for path, named in candidate_files(paths) if named or _holds_a_test(path)]


def _holds_a_test(path: Path) -> bool:
    try:
        data, _ = read_source(path.read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError, FlowError):
        return False  # a file that does not read is reported by the flow loader, not run as a test
    return is_flow_test(data)
