"""The ``parlour`` command.

    parlour serve [--config FILE] [...]  run a node: Ray and its node servers (see --help)
    parlour token new                  a new token and the hash to put in the config file
    parlour chat [PATH...]             talk to flows in the terminal (default: the bundled flows)
    parlour test [PATH...]             run flow test files (told by their top-level `steps`)
    parlour flows validate PATH...     check flows: every problem as file:line:column
    parlour flows schema               print the JSON Schema of flow files, for editors
    parlour secrets set|list|delete    a tenant's secrets, through a running node
    parlour dlq list|show|replay|drop  the replies given up on, through a running node
    parlour handoffs list|show|assign|reply|resume|close   the agent inbox, through a running node
    parlour conversations list|transcript|reset    find and inspect conversations, through a running node
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
import time
from pathlib import Path

from . import __version__, conversations_cli, handoffs_cli
from .errors import FlowError
from .flow import json_schema, load_catalog, load_paths
from .flow.deploy_checks import check_env
from .flows_dir import bundled_flows
from .testing import find_test_files, run_file


def _named_values(items: list[str], what: str) -> dict[str, str]:
    """``NAME=VALUE`` pairs, or ``NAME`` alone to take the value from the process environment."""
    values = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            if name not in os.environ:
                raise SystemExit(f"parlour: {what} {name} is not set in the environment (give {name}=VALUE)")
            value = os.environ[name]
        values[name] = value
    return values


def cmd_validate(args: argparse.Namespace) -> int:
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        print(f"parlour: no such file or directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        have = _env_given(args)
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    result = load_paths(args.paths)
    used = sorted({name for flow in result.flows for name, _, _ in flow.env_uses})
    if have is not None:
        result.problems += [p for flow in result.flows for p in check_env(flow, have)]
    elif used:
        print(f"env values the flows read: {', '.join(used)} (check that they are set with --env NAME "
              "or --config FILE)", file=sys.stderr)
    problems = sorted(result.problems, key=lambda p: (p.path, p.line, p.column))
    errors = [p for p in problems if p.severity == "error"]
    warnings = [p for p in problems if p.severity != "error"]
    if args.json:
        print(json.dumps([{"path": p.path, "line": p.line, "column": p.column, "severity": p.severity,
                           "message": p.message} for p in problems], indent=2))
    else:
        for problem in problems:
            print(problem)
        print(f"{len(result.flows)} flow(s) loaded, {len(errors)} error(s), {len(warnings)} warning(s)",
              file=sys.stderr)
    return 1 if errors or (args.strict and warnings) else 0


def _env_given(args: argparse.Namespace) -> set[str] | None:
    """The env names the operator sets, from ``--env NAME[=VALUE]`` and the config file's
    tenants (every tenant's: validate does not know which tenant a flow is for); None when
    neither is given."""
    if not args.env and not args.config:
        return None
    names = {item.partition("=")[0] for item in args.env}
    if args.config:
        from .config import ConfigError, load_settings, scope_node_values

        try:
            settings = scope_node_values(load_settings(args.config))
        except ConfigError as exc:
            raise SystemExit(f"parlour: {exc}") from None
        names |= {name for tenant in settings.tenants.values() for name in tenant.env}
    return names


def cmd_schema(args: argparse.Namespace) -> int:
    text = json.dumps(json_schema(), indent=2) + "\n"
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from .chat import chat, chat_egress

    try:
        egress = chat_egress(args.allow_egress)
    except ValueError as exc:
        print(f"parlour: --allow-egress: {exc}", file=sys.stderr)
        return 2
    paths = args.paths or [bundled_flows()]
    try:
        catalog = load_catalog(paths, env=_named_values(args.env, "env"))
    except FlowError as exc:
        print(exc, file=sys.stderr)
        return 1
    if args.flow and args.flow not in catalog:
        print(f"parlour: no flow {args.flow!r}; loaded: {', '.join(f.id for f in catalog)}", file=sys.stderr)
        return 2
    try:
        asyncio.run(chat(catalog, secrets=_named_values(args.secret, "secret"), flow=args.flow,
                         user_name=args.name, egress=egress))
    except KeyboardInterrupt:
        pass
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    tests = find_test_files(args.paths or [bundled_flows()])
    if not tests:
        print("parlour: no flow test files (YAML with top-level `steps`) found", file=sys.stderr)
        return 2
    failed = 0
    for number, path in enumerate(tests, 1):
        outcome = asyncio.run(run_file(path, args.flows or None))
        progress = f"[{number}/{len(tests)}]"
        if outcome.passed:
            print(f"{progress} PASS {path} ({outcome.steps} steps)")
            if args.verbose:
                print("\n".join("    " + line for line in outcome.transcript))
            continue
        failed += 1
        print(f"{progress} FAIL {outcome.failure}")
        if outcome.transcript:
            print("    the conversation up to there:")
            print("\n".join("      " + line for line in outcome.transcript))
    print(f"{len(tests) - failed} passed, {failed} failed")
    return 1 if failed else 0


def cmd_serve(args: argparse.Namespace) -> int:
    from pydantic import SecretStr

    from .config import ConfigError, load_settings, scope_node_values
    from .serve import run

    options = {name: getattr(args, name) for name in SERVE_OPTIONS}
    try:
        settings = load_settings(args.config or os.environ.get("PARLOUR_CONFIG"), **options)
        if args.env or args.secret:
            settings = settings.model_copy(update={
                "env": {**settings.env, **_named_values(args.env, "env")},
                "secrets": {**settings.secrets,
                            **{k: SecretStr(v) for k, v in _named_values(args.secret, "secret").items()}}})
            settings = scope_node_values(settings)  # --env/--secret: the one tenant's, or refused
    except ConfigError as exc:
        print(f"parlour: {exc}", file=sys.stderr)
        return 2
    return run(settings)


def cmd_token(args: argparse.Namespace) -> int:
    from .config import hash_token, new_token

    if args.secrets_key:
        from .channels.registry import Cipher

        print(f"{Cipher.new_key()}\n(set it as PARLOUR_SECRETS_KEY on every node; to rotate, put the new key first: "
              "PARLOUR_SECRETS_KEY=new,old)")
        return 0
    token = new_token()
    print(f"token: {token}\nhash:  {hash_token(token)}\n(give the token to its user; put the hash in the config "
          "file's `tokens` list of the tenant)")
    return 0


def cmd_dlq(args: argparse.Namespace) -> int:
    from .admin_client import AdminClient, AdminError

    client = AdminClient(args.url, args.token, args.data_dir)
    base = f"/v1/{args.tenant}/dead-letters"
    try:
        if args.dlq_command in ("list", "show"):
            letters = client.call("GET", base)["dead_letters"]
            if args.dlq_command == "show":
                found = [letter for letter in letters if letter["id"] == args.id]
                if not found:
                    print(f"parlour: no dead letter {args.id!r} for tenant {args.tenant!r}", file=sys.stderr)
                    return 1
                print(json.dumps(found[0], indent=2, ensure_ascii=False))
                return 0
            for letter in letters:
                text = (letter["reply"].get("text") or "").replace("\n", " ")
                print(f"{letter['id']}  {letter['channel']}/{letter['user']}#{letter['seq']}  "
                      f"{letter['attempts']} attempt(s): {letter['reason'][:60]}  | {text[:40]}")
            print(f"{len(letters)} dead letter(s)")
            return 0
        body = {"all": True} if args.all else {"ids": args.ids}
        if not args.all and not args.ids:
            print("parlour: name the dead letters (ids from `parlour dlq list`) or give --all", file=sys.stderr)
            return 2
        done = client.call("POST", f"{base}/{args.dlq_command}", body)
        print(f"{next(iter(done.values()))} dead letter(s) {'replayed' if args.dlq_command == 'replay' else 'dropped'}")
        return 0
    except AdminError as exc:
        print(f"parlour: {exc}", file=sys.stderr)
        return 1


def _secret_value(name: str) -> str:
    """The value to set: stdin when it is not a terminal (a pipe, a file), else a prompt that
    does not echo. Never an argument, which other local users could read in the process list."""
    if not sys.stdin.isatty():
        value = sys.stdin.read()
        value = value[:-1] if value.endswith("\n") else value
        return value[:-1] if value.endswith("\r") else value
    return getpass.getpass(f"value of {name} (not shown): ")


def cmd_secrets(args: argparse.Namespace) -> int:
    from .admin_client import AdminClient, AdminError

    base = f"/v1/{args.tenant}/secrets"
    try:
        client = AdminClient(args.url, args.token, args.data_dir)
        if args.secrets_command == "list":
            found = client.call("GET", base)["secrets"]
            for secret in found:
                print(f"{secret['name']}  {secret['value']} ({secret['source']}"
                      f"{_when(secret['set_at'])})")
            print(f"{len(found)} secret(s)")
            return 0
        if args.secrets_command == "delete":
            client.call("DELETE", f"{base}/{args.name}")
            print(f"secret {args.name} of tenant {args.tenant} deleted")
            return 0
        value = _secret_value(args.name)
        if not value:
            print("parlour: the value is empty: nothing was set", file=sys.stderr)
            return 2
        client.call("PUT", f"{base}/{args.name}", {"value": value})
        print(f"secret {args.name} of tenant {args.tenant} set")
        return 0
    except AdminError as exc:
        print(f"parlour: {exc}", file=sys.stderr)
        return 1


def _when(set_at: float | None) -> str:
    return f", set {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(set_at))}" if set_at is not None else ""


def _node_options(command: argparse.ArgumentParser) -> None:
    """The options of a command that talks to a running node."""
    command.add_argument("--url", default=os.environ.get("PARLOUR_URL", "http://127.0.0.1:8080"),
                         help="the node's URL (or PARLOUR_URL; default http://127.0.0.1:8080)")
    command.add_argument("--token", help="an admin token (default PARLOUR_ADMIN_TOKEN, else the data folder's)")
    command.add_argument("--data-dir", type=Path, default=Path(".parlour"), help="where serve keeps its token")


SERVE_OPTIONS = {
    "host": (str, "address to listen on (default 127.0.0.1)"),
    "port": (int, "port to listen on (default 8080; 0 for any free one)"),
    "data_dir": (Path, "folder for the SQLite store and the admin token (default ./.parlour)"),
    "flows": (Path, "flows folder for tenants that name none (default: the bundled flows)"),
    "store": (str, "sqlite:///path or redis://host:port/db (default: sqlite in the data folder)"),
    "ray_address": (str, "join this Ray cluster instead of starting a local Ray"),
    "servers": (int, "node servers to run, each the gateway and a conversation host in one process "
                     "(default: one per core)"),
    "hosts": (int, "the same as --servers (its name before node servers)"),
    "log_format": (str, "text or json"),
    "log_level": (str, "debug, info, warning or error"),
}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="parlour", description="An actor-model conversation runtime.")
    top.add_argument("--version", action="version", version=f"parlour {__version__}")
    sub = top.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve",
                           help="run a node: Ray and its node servers (the HTTP gateway and the conversations)",
                           description="Every option is also PARLOUR_<NAME> in the environment and a key of the "
                                       "config file; options win over the environment, which wins over the file.")
    serve.add_argument("--config", metavar="FILE", help="a YAML config file (or PARLOUR_CONFIG)")
    for name, (kind, text) in SERVE_OPTIONS.items():
        serve.add_argument("--" + name.replace("_", "-"), type=kind, help=text)
    serve.add_argument("--env", action="append", default=[], metavar="NAME[=VALUE]",
                       help="a value the one tenant's flows read as env.NAME (from the environment if no VALUE); "
                            "with several tenants, tenants.<t>.env in the file")
    serve.add_argument("--secret", action="append", default=[], metavar="NAME[=VALUE]",
                       help="a secret the one tenant's http nodes may use (from the environment if no VALUE); with "
                            "several tenants, tenants.<t>.secrets in the file or `parlour secrets set`")
    serve.set_defaults(run=cmd_serve)

    token = sub.add_parser("token", help="make tokens for the admin API")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    new = token_sub.add_parser("new", help="print a new token and its hash")
    new.add_argument("--secrets-key", action="store_true", help="print a new key for channel credentials instead")
    new.set_defaults(run=cmd_token)

    dlq = sub.add_parser("dlq", help="the replies given up on: list, show, replay, drop (through a running node)")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    for name, text in (("list", "list a tenant's dead letters, oldest first"), ("show", "one dead letter in full"),
                       ("replay", "send dead letters again"), ("drop", "delete dead letters")):
        command = dlq_sub.add_parser(name, help=text)
        command.add_argument("tenant")
        if name == "show":
            command.add_argument("id")
        elif name in ("replay", "drop"):
            command.add_argument("ids", nargs="*", metavar="ID")
            command.add_argument("--all", action="store_true", help="every dead letter of the tenant")
        _node_options(command)
        command.set_defaults(run=cmd_dlq)

    secrets = sub.add_parser("secrets", help="a tenant's secrets: set, list, delete (through a running node)")
    secrets_sub = secrets.add_subparsers(dest="secrets_command", required=True)
    for name, text in (("set", "set a secret; its value from stdin, or a prompt that does not echo"),
                       ("list", "the tenant's secrets, by name (never their values)"), ("delete", "remove a secret")):
        command = secrets_sub.add_parser(name, help=text)
        command.add_argument("tenant")
        if name != "list":
            command.add_argument("name", help="as flows name it: {secret: NAME}")
        _node_options(command)
        command.set_defaults(run=cmd_secrets)

    handoffs_cli.add_commands(sub, _node_options)
    conversations_cli.add_commands(sub, _node_options)

    chat = sub.add_parser("chat", help="talk to flows in the terminal")
    chat.add_argument("paths", nargs="*", help="flow files or directories (default: the bundled flows)")
    chat.add_argument("--flow", help="start this flow on the first message, whatever the triggers say")
    chat.add_argument("--env", action="append", default=[], metavar="NAME[=VALUE]",
                      help="a value templates may read as env.NAME (from the environment if no VALUE)")
    chat.add_argument("--secret", action="append", default=[], metavar="NAME[=VALUE]",
                      help="a secret http nodes may use (from the environment if no VALUE)")
    chat.add_argument("--name", help="your name, as the flow sees it (user.name)")
    chat.add_argument("--allow-egress", action="append", default=[], metavar="RANGE_OR_HOST",
                      help="let http nodes reach this CIDR range or host name besides public addresses, "
                           "e.g. 127.0.0.0/8 for an API on this machine (repeatable)")
    chat.set_defaults(run=cmd_chat)

    test = sub.add_parser("test", help="run flow test files")
    test.add_argument("paths", nargs="*", help="test files or directories (default: the bundled flows)")
    test.add_argument("--flows", action="append", metavar="PATH",
                      help="load flows from here instead of next to each test")
    test.add_argument("-v", "--verbose", action="store_true", help="show passing conversations too")
    test.set_defaults(run=cmd_test)

    flows = sub.add_parser("flows", help="check flows, print their schema")
    flows_sub = flows.add_subparsers(dest="flows_command", required=True)
    validate = flows_sub.add_parser("validate", help="report every problem as file:line:column")
    validate.add_argument("paths", nargs="+", help="flow files or directories")
    validate.add_argument("--strict", action="store_true", help="warnings fail too")
    validate.add_argument("--json", action="store_true", help="problems as JSON")
    validate.add_argument("--env", action="append", default=[], metavar="NAME[=VALUE]",
                          help="an env value the operator sets: "
                               "each env.NAME a flow reads and none sets is warned about")
    validate.add_argument("--config", metavar="FILE", help="take the env values set from this config file's tenants")
    validate.set_defaults(run=cmd_validate)
    schema = flows_sub.add_parser("schema", help="print the JSON Schema of flow files")
    schema.add_argument("-o", "--output", help="write it to this file")
    schema.set_defaults(run=cmd_schema)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
