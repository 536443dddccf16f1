"""T5: faults under steady load through ``parlour serve``. A node server's process (a gateway
and a host) is SIGKILLed, then later ``redis-server`` is SIGKILLed and started again on its data
a second later (as a supervisor would).

The load is a channel's: users on the web channel, each sending numbered messages one after
another at a steady pace and sending again, with the same id, whatever was not acknowledged (a
5xx, a cut connection, a timeout). Each user's conversation keeps its transcript (the ``log``
flow). Afterwards every transcript is read back and compared with what was acknowledged:
messages acknowledged but lost, applied twice, and out of order are counted. The seconds to
recover run from a kill to the start of the first second in which every tenth of a second has
acknowledgements at half the steady rate or more, and nothing refused.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time
from dataclasses import asdict, dataclass, field

import aiohttp

from bench.harness import Context, Target
from bench.processes import Node

NAME = "t5"
TITLE = "T5 faults under load through parlour serve: a node server killed, then redis-server"
TARGET_S = 5.0
BUCKET_S = 0.1


@dataclass(frozen=True)
class Plan:
    users: int
    pace_s: float  # a user's least time between two messages: the steady load is users / pace_s
    steady_s: float  # load before the first fault, and after each recovery
    give_up_s: float  # a fault not recovered from within this is reported as such
    redis_down_s: float = 1.0  # how long redis-server stays dead: a supervisor's restart delay

    @classmethod
    def of(cls, quick: bool) -> Plan:
        return cls(users=30, pace_s=0.1, steady_s=3, give_up_s=30) if quick else cls(60, 0.1, 6, 60)


def budget_s(quick: bool) -> float:
    return 20 if quick else 35


@dataclass
class Channel:
    """The users' side: what was acknowledged, and when every answer came."""

    base: str
    plan: Plan
    acked: dict[str, list[int]] = field(default_factory=dict)
    acks: list[float] = field(default_factory=list)  # monotonic times
    refusals: list[float] = field(default_factory=list)
    running: bool = True

    async def user(self, http: aiohttp.ClientSession, user: str) -> None:
        mine = self.acked.setdefault(user, [])
        n = 0
        while self.running:
            started = time.monotonic()
            while not await self.send(http, user, n):
                await asyncio.sleep(0.05)
            mine.append(n)
            n += 1
            await asyncio.sleep(max(0.0, self.plan.pace_s - (time.monotonic() - started)))

    async def send(self, http: aiohttp.ClientSession, user: str, n: int) -> bool:
        try:
            async with http.post(f"{self.base}/v1/ledger/web/messages", json={
                    "user": user, "id": f"{user}-{n}", "text": f"{n}"}) as answer:
                await answer.read()
                ok = answer.status == 200
        except (TimeoutError, aiohttp.ClientError):
            ok = False
        (self.acks if ok else self.refusals).append(time.monotonic())
        return ok

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as http:
            await asyncio.gather(*(self.user(http, f"u{i}") for i in range(self.plan.users)))


def rates(times: list[float], start: float, end: float) -> list[int]:
    """Counts per bucket of ``BUCKET_S`` from ``start`` to ``end``."""
    counts = [0] * (int((end - start) / BUCKET_S) + 1)
    for t in times:
        if start <= t < end:
            counts[int((t - start) / BUCKET_S)] += 1
    return counts


def recovered_at(acks: list[float], refusals: list[float], baseline: float, since: float, now: float) -> float | None:
    """The start of the first second after ``since`` in which every bucket is normal: half the
    steady rate acknowledged or more, nothing refused. ``now`` ends the last bucket looked at."""
    acked, refused = rates(acks, since, now)[:-1], rates(refusals, since, now)[:-1]  # the last is not over
    normal = [a >= 0.5 * baseline * BUCKET_S and not r for a, r in zip(acked, refused, strict=True)]
    window = round(1 / BUCKET_S)
    for i in range(len(normal) - window + 1):
        if all(normal[i:i + window]):
            return since + i * BUCKET_S
    return None


async def wait_recovery(ctx: Context, channel: Channel, baseline: float, since: float, label: str) -> float | None:
    plan = channel.plan
    while time.monotonic() - since < plan.give_up_s:
        await asyncio.sleep(0.5)
        at = recovered_at(channel.acks, channel.refusals, baseline, since, time.monotonic())
        if at is not None:
            ctx.log(f"{label}: serving normally again after {at - since:.2f} s")
            await asyncio.sleep(plan.steady_s)
            return round(at - since, 2)
    ctx.log(f"{label}: NOT back to normal within {plan.give_up_s:g} s")
    return None


async def transcripts(node: Node, users: list[str]) -> dict[str, list[int]]:
    headers = {"Authorization": f"Bearer {node.admin_token}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        found = {}
        for user in users:
            async with http.get(f"{node.server.base}/v1/ledger/conversations/web/{user}") as answer:
                body = await answer.json()
                if answer.status != 200:
                    raise RuntimeError(f"reading {user}'s transcript: {answer.status} {body}")
                found[user] = [int(text) for text in body["vars"]["log"]]
        return found


def count(acked: dict[str, list[int]], found: dict[str, list[int]]) -> dict[str, int]:
    """What the transcripts ``found`` say about the messages ``acked``, per user in send order."""
    lost = twice = disorder = extra = 0
    for user, mine in acked.items():
        seen = found.get(user, [])
        once = list(dict.fromkeys(seen))  # each message where it first ran
        lost += len(set(mine) - set(seen))
        twice += len(seen) - len(once)
        disorder += sum(1 for a, b in itertools.pairwise(once) if b < a)
        extra += len(set(seen) - set(mine))  # applied, its answer not yet back when the load stopped
    return {"lost": lost, "twice": twice, "out_of_order": disorder, "applied_not_acknowledged": extra,
            "acknowledged": sum(map(len, acked.values()))}


async def scenario(ctx: Context, node: Node, plan: Plan) -> None:
    channel = Channel(node.server.base, plan)
    load = asyncio.create_task(channel.run())
    started = time.monotonic()
    await asyncio.sleep(plan.steady_s)
    baseline = sum(rates(channel.acks, started + 1, time.monotonic())) / (time.monotonic() - started - 1)
    ctx.log(f"steady load: {baseline:,.0f} acknowledged/s from {plan.users} users")
    events, recovery = [], {}

    victim = node.host_pids()[0]
    events.append(("node server SIGKILL", time.monotonic() - started))
    os.kill(victim, signal.SIGKILL)
    ctx.log(f"killed node server {victim}")
    recovery["host"] = await wait_recovery(ctx, channel, baseline, started + events[-1][1], "host killed")

    events.append((f"redis-server SIGKILL, restarted {plan.redis_down_s:g} s later", time.monotonic() - started))
    await asyncio.to_thread(node.redis.kill)  # in a thread: the users go on meanwhile
    await asyncio.sleep(plan.redis_down_s)
    await asyncio.to_thread(node.redis.start)
    ctx.log(f"killed redis-server, started it again on its AOF {plan.redis_down_s:g} s later")
    recovery["redis"] = await wait_recovery(ctx, channel, baseline, started + events[-1][1], "redis killed")

    channel.running = False
    await asyncio.wait_for(load, 60)
    ended = time.monotonic()
    counts = count(channel.acked, await transcripts(node, list(channel.acked)))
    ctx.data.update(plan=asdict(plan), baseline=baseline, events=events, recovery=recovery, counts=counts,
                    acks=rates(channel.acks, started, ended), refusals=rates(channel.refusals, started, ended))
    figures(ctx, plan, counts, recovery, baseline)


def figures(ctx: Context, plan: Plan, counts: dict, recovery: dict, baseline: float) -> None:
    ctx.figure("T5", "messages acknowledged but lost", counts["lost"], "", target=Target("<=", 0))
    ctx.figure("T5", "messages applied twice", counts["twice"], "", target=Target("<=", 0))
    ctx.figure("T5", "messages applied out of order", counts["out_of_order"], "", target=Target("<=", 0))
    for fault, label in (("host", "a node server SIGKILLed"),
                         ("redis", f"redis-server SIGKILLed, restarted {plan.redis_down_s:g} s later")):
        seconds = recovery[fault]
        ctx.figure("T5", f"seconds until serving normally, {label}"
                   + ("" if seconds is not None else f" (not within {plan.give_up_s:g} s)"),
                   seconds if seconds is not None else plan.give_up_s, "s", target=Target("<=", TARGET_S))
    ctx.figure("", "steady load before the faults, acknowledged", round(baseline), "msg/s")
    ctx.note(f"{plan.users} users on the web channel, each sending a message at most every "
             f"{plan.pace_s:g} s and resending it with the same id every 0.05 s until acknowledged; "
             f"{counts['acknowledged']:,} acknowledged in all; {counts['applied_not_acknowledged']} applied whose "
             "answer had not come back when the load stopped (not an error: the channel would resend them)")
    ctx.note(f"normal = a second in which every {BUCKET_S:g} s saw acknowledgements at half the steady rate or more "
             "and nothing refused, counted from the kill; Redis with AOF appendfsync everysec, started again on the "
             f"same port and data {plan.redis_down_s:g} s after the kill")


def run(ctx: Context) -> None:
    node = ctx.shared.take("node-redis")
    if node is None:
        ctx.shared.no_ray()
        node = Node(ctx.folder / "node", "redis", ctx.log).start()
    try:
        asyncio.run(scenario(ctx, node, Plan.of(ctx.quick)))
    finally:
        node.close()


def details(data: dict) -> str:
    c = data["counts"]
    return (f"{c['acknowledged']:,} messages acknowledged: {c['lost']} lost, {c['twice']} applied twice, "
            f"{c['out_of_order']} out of order. Recovery: host {data['recovery']['host']} s, "
            f"redis {data['recovery']['redis']} s.")


def plot(data: dict, path, result: dict) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4))
    x = [i * BUCKET_S for i in range(len(data["acks"]))]
    ax.plot(x, [n / BUCKET_S for n in data["acks"]], color="#3b7dd8", lw=0.8, drawstyle="steps-post",
            label=f"acknowledged / s (per {BUCKET_S:g} s)")
    ax.plot(x, [n / BUCKET_S for n in data["refusals"]], color="#d8333b", lw=0.8, drawstyle="steps-post",
            label="refused or failed / s")
    ax.axhline(data["baseline"], color="grey", ls=":", label="steady rate before the faults")
    for (label, at), fault in zip(data["events"], ("host", "redis"), strict=True):
        ax.axvline(at, color="black", ls="--")
        ax.text(at, ax.get_ylim()[1] * 0.95, f" {label}", fontsize=8, va="top")
        if data["recovery"][fault] is not None:
            ax.axvspan(at, at + data["recovery"][fault], color="#f4b183", alpha=0.4)
    ax.set_xlabel("seconds")
    ax.set_ylabel("messages per second")
    c = data["counts"]
    ax.set_title(f"T5: {c['acknowledged']:,} acknowledged, {c['lost']} lost, {c['twice']} twice, "
                 f"{c['out_of_order']} out of order ({result['date']})")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
