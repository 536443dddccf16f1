"""``parlour serve``'s settings: defaults, then a YAML file, then ``PARLOUR_*`` variables, then
command-line options, each overriding the one before.

>>> settings = load_settings(config_file="parlour.yaml", port=9000)
>>> settings.store_url
'sqlite:///.parlour/parlour.db'

Every option is also an environment variable: ``PARLOUR_PORT=9000``, nested ones with a double
underscore (``PARLOUR_LIMITS__MAX_BODY_BYTES=131072``). Tenants, their channels and their token
hashes are declared in the file::

    tenants:
      acme:
        flows: [flows/acme]            # deployed at start; default: --flows
        tokens: ["sha256:9f86d0..."]   # `parlour token new` prints a token and its hash
        rate_limit: "50/second"        # any `limits` expression; null for none
        channels: {web: {}}
        egress: {allow: [10.1.0.0/16, members.internal]}  # what its flows may reach beyond public addresses
        env: {MEMBERS_API: "https://members.example.org"}   # only acme's flows read these
        secrets: {MEMBERS_KEY: "...", HELPDESK_KEY: "..."}   # only acme's http nodes use these
        handoff_webhook: {url: "https://helpdesk.example/parlour", secret: HELPDESK_KEY}

A tenant's ``env`` and ``secrets`` are its own: no other tenant's flow can read them. The
top-level ``env``/``secrets`` (and ``parlour serve --env/--secret``) are the quick start's: they
are valid only while exactly one tenant is declared, and then they are that tenant's
(:func:`scope_node_values`).

A tenant token is never written down in clear: only its SHA-256 (tokens are 256-bit random
strings, so a fast hash is enough; the point is that a leaked file leaks no token).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import limits
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource

from .egress import parse_allow
from .errors import ParlourError

TOKEN_PREFIX = "sha256:"
MAX_ANSWER_WAIT_S = 10.0
"""The longest a web answer may wait for an HTTP call's replies (``web_answer_wait_s``): a
request held longer ties up a connection for nothing a mailbox poll cannot do."""


class ConfigError(ParlourError):
    """The settings are invalid: ``problems`` lists each as ``where: what``."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid settings:\n" + "\n".join(f"  {p}" for p in problems))


def hash_token(token: str) -> str:
    return TOKEN_PREFIX + hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "plr_" + secrets.token_urlsafe(32)


def _rate_limit(value: str | None) -> str | None:
    """``value`` if it is a `limits` expression (or None, for no limit)."""
    if value is not None:
        try:
            limits.parse_many(value)
        except ValueError as exc:
            raise ValueError(f"not a rate limit such as '50/second' or '10/second;500/minute': {exc}") from None
    return value


RateLimit = Annotated[str | None, AfterValidator(_rate_limit)]
"""A rate such as ``"50/second"`` or ``"10/second;500/minute"`` (any `limits` expression); None for none."""


class EgressConfig(BaseModel):
    """What a tenant's http nodes and bots may reach besides public addresses (issue 12, finding 3)."""

    model_config = ConfigDict(extra="forbid")

    allow: list[str] = Field(default_factory=list, description="CIDR ranges, addresses and host names "
                             "(`*.internal` for every name below one) its calls may connect to although they are "
                             "loopback, private, link-local...; default: none (public addresses only)")

    @field_validator("allow")
    @classmethod
    def _entries(cls, allow: list[str]) -> list[str]:
        for entry in allow:
            parse_allow(entry)  # ValueError names the entry
        return allow


class HandoffWebhook(BaseModel):
    """Where a tenant's hand-off events are posted (issue 13), and the tenant secret that signs
    them. The key is a secret's *name*, not its value: it is set like any of the tenant's
    secrets (``tenants.<t>.secrets`` or ``PUT /v1/{t}/secrets/{name}``, sealed at rest), so it
    is never in the clear in this file, and a rotation is an API call."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="http(s) URL the events are POSTed to; the tenant's egress policy applies")
    secret: str = Field(description="the name of the tenant secret whose value signs each event (HMAC-SHA256)")

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
            raise ValueError(f"a hand-off webhook is an http(s) URL with a host and no credentials, got {url[:200]!r}")
        if parts.fragment or any(c.isspace() for c in url) or len(url) > 2048:
            raise ValueError("a hand-off webhook URL has no fragment, no white space and at most 2048 characters")
        return url

    @field_validator("secret")
    @classmethod
    def _secret(cls, name: str) -> str:
        return check_value_name(name)


class AgentConfig(BaseModel):
    """A human agent of a tenant: a token that reaches only the tenant's hand-offs (the
    inbox API and the console), and of those only the tickets of ``queues`` (all if unset)."""

    model_config = ConfigDict(extra="forbid")

    token: str = Field(description="the agent token's hash, sha256:<64 hex digits> (`parlour token new`)")
    queues: list[str] | None = Field(None, description="the queues whose tickets this agent sees; null: all")

    @field_validator("token")
    @classmethod
    def _hashed(cls, token: str) -> str:
        digest = token.removeprefix(TOKEN_PREFIX)
        if not token.startswith(TOKEN_PREFIX) or len(digest) != 64 or not _is_hex(digest):
            raise ValueError("an agent token is given by its hash, sha256:<64 hex digits> "
                             "(`parlour token new` makes one)")
        return token


def _web_only() -> dict[str, dict[str, Any]]:
    """A tenant's channels unless it names them: the web chat alone."""
    return {"web": {}}


class TenantConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    flows: list[Path] | None = None
    tokens: list[str] = Field(default_factory=list, description="token hashes, sha256:<64 hex digits>")
    rate_limit: RateLimit = "200/second"
    channels: dict[str, dict[str, Any]] = Field(default_factory=_web_only)
    # isolation: dedicated (issue 12, finding 4)
    max_dedicated: int | None = Field(None, ge=0, description="dedicated conversations (a process each) this "
                                      "tenant may run at once on a node; default: dedicated.max_per_tenant")
    # flow uploads (issue 12, finding 5)
    admin_rate_limit: RateLimit = Field("10/minute", description="the tenant's admin writes (flow uploads, "
                                         "rollbacks, resets): any `limits` expression; null for none")
    # issue 12, finding 3: the egress policy
    egress: EgressConfig = Field(default_factory=EgressConfig)
    # -- issue 12, finding 10 (gateway hardening): one web user cannot take the tenant's whole rate
    user_rate_limit: RateLimit = Field("10/second;100/minute", description="messages one web chat user may send "
                                        "(a `limits` expression; null for none), checked before the tenant's "
                                        "rate_limit")
    # -- end of finding 10
    # issue 13: a web message answered after an http node waits this long for the call's replies
    web_answer_wait_s: float = Field(0.0, ge=0, le=MAX_ANSWER_WAIT_S, description="when a web message's turn "
                                     "starts an HTTP call, its answer waits up to this long for what the call's "
                                     "result makes the flow say, and includes it (0: off, the default)")
    # issue 12, finding 1: a tenant's own env and secrets, seen by its flows only
    env: dict[str, str] = Field(default_factory=dict, description="values this tenant's flows read as env.NAME")
    secrets: dict[str, SecretStr] = Field(default_factory=dict, description="secrets this tenant's http nodes use")
    # issue 13: a helpdesk told of every hand-off
    handoff_webhook: HandoffWebhook | None = Field(None, description="where this tenant's hand-off ticket events "
                                                   "are posted, signed with one of its secrets")
    # issue 13: the humans behind a hand-off
    agents: dict[str, AgentConfig] = Field(default_factory=dict, description="agent name -> its token and queues")

    @field_validator("env", "secrets")
    @classmethod
    def _names(cls, values: dict[str, Any]) -> dict[str, Any]:
        for name in values:
            check_value_name(name)
        return values

    @field_validator("tokens")
    @classmethod
    def _hashed(cls, tokens: list[str]) -> list[str]:
        for token in tokens:
            digest = token.removeprefix(TOKEN_PREFIX)
            if not token.startswith(TOKEN_PREFIX) or len(digest) != 64 or not _is_hex(digest):
                raise ValueError("a token is given by its hash, sha256:<64 hex digits> (`parlour token new` makes one)")
        return tokens



def check_tenant_name(name: str) -> str:
    """``name`` if it can name a tenant (it appears in URLs and conversation keys), else ValueError."""
    spelled = 0 < len(name) <= 64 and name.isascii() and all(c.isalnum() or c in "-_" for c in name)
    if not spelled or name == "tenants":
        raise ValueError(f"tenant name {name!r}: 1 to 64 ASCII letters, digits, '-' or '_' (and not 'tenants')")
    return name


VALUE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
"""An env value's or a secret's name, as a flow writes it (``env.NAME``, ``{secret: NAME}``)."""


def check_value_name(name: str) -> str:
    """``name`` if it can name an env value or a secret, else ValueError."""
    if not VALUE_NAME.fullmatch(name):
        raise ValueError(f"name {name[:80]!r}: 1 to 64 ASCII letters, digits or '_', not starting with a digit")
    return name


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_body_bytes: int = Field(64 * 1024, ge=1024)
    request_timeout_s: float = Field(30.0, gt=0)
    max_pending: int = Field(10_000, ge=1, description="messages accepted and not yet answered, beyond which 503")
    max_batch: int = Field(500, ge=1, le=10_000)
    ws_per_user: int = Field(8, ge=1)
    # A turn that runs on past the template bounds (issue 12, finding 2: actors/watchdog.py)
    turn_watchdog_s: float = Field(5.0, ge=0, description="a turn running longer ends its host's process, which "
                                   "Ray starts again (0: no watchdog)")
    poison_tries: int = Field(2, ge=1, description="deaths in one message's turn before it is quarantined")
    # -- issue 12, finding 10 (gateway hardening): node-wide caps
    max_websockets: int = Field(10_000, ge=1, description="chat sockets open on this node, beyond which 503")
    auth_failures: RateLimit = Field("10/minute", description="failed token checks one client address may make "
                                      "(a `limits` expression; null for none), beyond which 429 for any token")
    # -- end of finding 10
    # issue 12, finding 1: what one tenant may keep in its secrets (set through the admin API)
    max_secrets: int = Field(100, ge=1, le=10_000, description="secrets one tenant may set through the API")
    max_secret_bytes: int = Field(4096, ge=16, le=65_536, description="the longest secret value, in UTF-8 bytes")
    # issue 13: the web mailbox (gateway/mailbox.py)
    mailbox_ttl_s: float = Field(7 * 86_400.0, ge=60, le=90 * 86_400.0, description="how long a reply waits in a "
                                 "web user's mailbox (what a timer or an API result made the flow say) unread or "
                                 "unacknowledged; each mailbox also keeps only its newest 10,000")
    # issue 13: transcripts and hand-off tickets (actors/tickets.py)
    transcript_ttl_s: float = Field(7 * 86_400.0, ge=60, le=400 * 86_400.0, description="how long each turn "
                                    "stays in its conversation's transcript (what agents and exports read); each "
                                    "transcript also keeps only its newest 10,000 turns")
    closed_ticket_ttl_s: float = Field(30 * 86_400.0, ge=60, le=400 * 86_400.0, description="how long a closed "
                                       "hand-off ticket is listed; an open one lives as long as its conversation")


class Dedicated(BaseModel):
    """``isolation: dedicated`` conversations, a process each (~90 MB, ~1 s to start): how many
    a node runs at once, in all and per tenant (a tenant's ``max_dedicated`` overrides the
    latter), and after how long unused one is retired. Over a cap, a new dedicated
    conversation's message is refused as retryable (the web channel's 503 with Retry-After)."""

    model_config = ConfigDict(extra="forbid")

    max_per_node: int = Field(4, ge=0)
    max_per_tenant: int = Field(2, ge=0)
    idle_s: float = Field(120.0, gt=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PARLOUR_", env_nested_delimiter="__", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65_535)
    data_dir: Path = Path(".parlour")
    flows: Path | None = Field(None, description="flows for tenants that name none (default: the bundled flows)")
    store: str | None = Field(None, description="sqlite:///path or redis://host:port/db (default: sqlite in data_dir)")
    ray_address: str | None = None
    servers: int | None = Field(None, ge=1, le=256, description="node servers to run, each a process with the "
                                "gateway and a conversation host (default: one per core, or num_cpus)")
    hosts: int | None = Field(None, ge=1, le=256, description="the same as servers (its name before node servers)")
    partitions: int = Field(1024, ge=1, le=65_536)
    num_cpus: int | None = Field(None, ge=1)
    admin_token: SecretStr | None = Field(None, description="the operator's token; generated into data_dir if unset")
    public_url: str | None = Field(None, description="the URL users and channels reach this server at: the printed "
                                   "links, and the URL a channel signs when parlour sits behind a proxy")
    secrets_key: SecretStr | None = Field(None, description="Fernet key(s), comma-separated (the first encrypts), for "
                                          "channel credentials at rest; generated into data_dir if unset")
    # Names keep their case only from the file and the options (the environment's are lowercased).
    # The one tenant's, while only one is declared (see scope_node_values).
    env: dict[str, str] = Field(default_factory=dict, description="the one tenant's env (tenants.<t>.env)")
    secrets: dict[str, SecretStr] = Field(default_factory=dict, description="the one tenant's secrets "
                                          "(tenants.<t>.secrets)")
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    shutdown_timeout_s: float = Field(30.0, gt=0)
    limits: Limits = Field(default_factory=Limits)
    dedicated: Dedicated = Field(default_factory=Dedicated)  # issue 12, finding 4
    # -- issue 12, finding 10 (gateway hardening): /metrics names tenants and bots
    metrics_public: bool = Field(False, description="serve /metrics without a token (by default it needs the "
                                 "operator's: `Authorization: Bearer <admin token>`)")
    # -- end of finding 10
    tenants: dict[str, TenantConfig] = Field(default_factory=lambda: {"demo": TenantConfig()})

    @field_validator("tenants")
    @classmethod
    def _tenant_names(cls, tenants: dict[str, TenantConfig]) -> dict[str, TenantConfig]:
        for name in tenants:
            check_tenant_name(name)
        return tenants

    @model_validator(mode="after")
    def _one_server_count(self) -> Settings:
        if self.servers is not None and self.hosts is not None and self.servers != self.hosts:
            raise ValueError(f"servers ({self.servers}) and hosts ({self.hosts}) are one setting by two names: "
                             "give one")
        return self

    def server_count(self) -> int:
        """The node servers to run: ``servers`` (or ``hosts``), else one per core."""
        return self.servers or self.hosts or self.num_cpus or os.cpu_count() or 1

    def handoff_webhooks(self) -> dict[str, tuple[str, str]]:
        """Each tenant's hand-off webhook as (url, secret name), for those that have one."""
        return {name: (t.handoff_webhook.url, t.handoff_webhook.secret)
                for name, t in self.tenants.items() if t.handoff_webhook is not None}

    def egress_allows(self) -> dict[str, list[str]]:
        """Each tenant's ``egress.allow``, as plain data for the hosts and the delivery supervisor."""
        return {name: list(tenant.egress.allow) for name, tenant in self.tenants.items()}

    @model_validator(mode="after")
    def _scoped(self) -> Settings:
        return scope_node_values(self)

    @property
    def store_url(self) -> str:
        return self.store or f"sqlite:///{self.data_dir / 'parlour.db'}"

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, YamlConfigSettingsSource(settings_cls)


def scope_node_values(settings: Settings) -> Settings:
    """``settings`` with the top-level ``env`` and ``secrets`` moved into the one declared
    tenant (its own values win); ConfigError when more than one tenant is declared, since a
    node-wide value would then reach every tenant's flows.

    >>> scope_node_values(Settings(env={"API": "http://x"})).tenants["demo"].env
    {'API': 'http://x'}
    """
    if not settings.env and not settings.secrets:
        return settings
    if len(settings.tenants) != 1:
        names = sorted(set(settings.env) | set(settings.secrets))
        raise ConfigError([f"env/secrets ({', '.join(names)}): top-level values (and `parlour serve --env/--secret`) "
                           f"apply only while one tenant is declared, and {len(settings.tenants)} are: give each "
                           "tenant its own under tenants.<tenant>.env and tenants.<tenant>.secrets"])
    (name, tenant), = settings.tenants.items()
    scoped = tenant.model_copy(update={"env": {**settings.env, **tenant.env},
                                       "secrets": {**settings.secrets, **tenant.secrets}})
    settings.tenants, settings.env, settings.secrets = {name: scoped}, {}, {}  # in place: validators call it too
    return settings


def load_settings(config_file: str | Path | None = None, **options: Any) -> Settings:
    """The settings from ``config_file`` (YAML), the environment and ``options`` (the command
    line; ``None`` values are left out); :class:`ConfigError` with every problem."""
    path = Path(config_file) if config_file else None
    if path is not None and not path.is_file():
        raise ConfigError([f"{path}: no such config file"])

    class FromFile(Settings):
        model_config = SettingsConfigDict(yaml_file=path)

    try:
        return FromFile(**{k: v for k, v in options.items() if v is not None})
    except ValidationError as exc:
        where = f"{path}: " if path else ""
        raise ConfigError([f"{where}{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}"
                           for e in exc.errors()]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        place = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else f"{path}"
        raise ConfigError([f"{place}: {exc.problem}"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"]) from None
    except (ValueError, TypeError, yaml.YAMLError) as exc:
        raise ConfigError([f"{path}: a config file is a YAML mapping of settings ({exc})"]) from None
