"""The Redis backend of the store (`redis://[:password@]host:port/db`, Redis 7+ or Valkey):
conversation threads and tasks shared by every replica of a deployment.

Each thread is one hash `exai:thread:<uuid>` (`doc`: its JSON; `updated`: its last use;
`version`: bumped by every write) with a Redis key expiry of EXAI_CONVERSATION_TTL_HOURS,
refreshed by every use, so Redis itself frees what nobody uses; the sorted set `exai:threads`
(thread id by last use) lists them. A thread is live while `updated` is within the TTL of the
store's clock (the same rule as the SQLite backend, so a reader with another TTL sees the
same threads). Tasks (exai.store.tasks) are hashes `exai:task:<id>` kept likewise until their
own ttl, indexed by three sorted sets (see TASK_INDEX_KEY): the same records, statuses and rules
as the SQLite backend's tasks table.

Round trips: every operation, of threads or tasks, is one Lua script (one EVALSHA), except
`append`, which is two (read the thread with its version, then write it if that version is still
current; a write from another replica in between makes it read again). The client is coredis on anyio (trio): a cancelled
command leaves its connection usable (tests/test_redis.py checks exactly that).
"""

from __future__ import annotations

import builtins
import json
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import asdict
from typing import Any, Final, TypeVar, cast

import coredis
import orjson
import trio
from coredis.commands.script import Script
from coredis.exceptions import RedisError
from loguru import logger

from exai.config import RedisLocation
from exai.providers.catalog import PROVIDERS
from exai.providers.ratelimit import RequestRateLimiter, SharedRequestRateLimiter
from exai.store.deployment import Deployment, OpenCircuit, Replica
from exai.store.holds import ThreadHolds
from exai.store.tasks import (
    NewTask,
    TaskCursor,
    TaskNotFound,
    TaskRecord,
    TaskStatus,
    TooManyTasks,
    lost_outcome,
)
from exai.store.threads import (
    Appended,
    StoreUnavailable,
    Thread,
    ThreadNotFound,
    Turn,
    lookup_ids,
)

KEY_PREFIX: Final = "exai:"
INDEX_KEY: Final = f"{KEY_PREFIX}threads"
CONNECT_TIMEOUT_S: Final = 2.0
COMMAND_TIMEOUT_S: Final = 5.0
# A write that lost to another replica's write of the same thread reads it again, this often.
WRITE_ATTEMPTS: Final = 20
# A provider slot that is not free is asked for again this often (the wait is the caller's).
SLOT_POLL_S: Final = 0.02
# A slot's release is given this long, shielded; a release that fails leaves a lease that
# nobody renews, which frees itself within the lease time.
RELEASE_S: Final = 1.0

T = TypeVar("T")

# KEYS: thread, index. ARGV: now, cutoff, ttl (whole seconds), touch ("1"/"0"), id.
# -> false (no live thread) or {doc, updated, version}.
_READ: Final = """
local v = redis.call('HMGET', KEYS[1], 'doc', 'updated', 'version')
if not v[1] or tonumber(v[2]) < tonumber(ARGV[2]) then return false end
if ARGV[4] == '1' then
  redis.call('HSET', KEYS[1], 'updated', ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  redis.call('ZADD', KEYS[2], ARGV[1], ARGV[5])
  v[2] = ARGV[1]
end
return v
"""
# KEYS: thread, index. ARGV: doc, now, ttl, expected version ("0": a new thread), id, cutoff.
# -> 1 written, 0 another write came first.
_WRITE: Final = """
local current = redis.call('HGET', KEYS[1], 'version') or '0'
if current ~= ARGV[4] then return 0 end
redis.call('HSET', KEYS[1], 'doc', ARGV[1], 'updated', ARGV[2], 'version', tonumber(current) + 1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
if ARGV[4] == '0' then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[6]) end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[5])
return 1
"""
# KEYS: index. ARGV: cutoff, key prefix. -> {id, doc, updated, ...} newest first.
_LIST: Final = """
local out = {}
for _, id in ipairs(redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', ARGV[1])) do
  local v = redis.call('HMGET', ARGV[2] .. id, 'doc', 'updated')
  if v[1] and tonumber(v[2]) >= tonumber(ARGV[1]) then
    table.insert(out, id); table.insert(out, v[1]); table.insert(out, v[2])
  end
end
return out
"""
# KEYS: index. ARGV: cutoff, key prefix. -> how many expired threads were deleted.
_EXPIRE: Final = """
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
for _, id in ipairs(gone) do redis.call('DEL', ARGV[2] .. id) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
return #gone
"""


# Provider slots: one sorted set per provider, lease id -> expiry on the server's clock (TIME),
# so replicas' clocks need not agree. KEYS: slots. ARGV: ceiling, lease seconds, lease id.
_TAKE_SLOT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
return 1
"""
# KEYS: slots. ARGV: lease seconds, lease ids... -> how many were still held (and renewed).
_RENEW_SLOTS: Final = """
local t = redis.call('TIME')
local expiry = tonumber(t[1]) + tonumber(t[2]) / 1e6 + tonumber(ARGV[1])
local renewed = 0
for i = 2, #ARGV do
  renewed = renewed + redis.call('ZADD', KEYS[1], 'XX', 'CH', expiry, ARGV[i])
end
return renewed
"""


REPLICAS_KEY: Final = f"{KEY_PREFIX}replicas"  # replica id -> lease expiry (server clock)
REPLICA_INFO_KEY: Final = f"{KEY_PREFIX}replica-info"  # replica id -> its JSON
# A provider circuit opened anywhere is the key exai:circuit:<provider> (its JSON reason), which
# expires when the cooldown of the replica that opened it ends; the first opener's stands.
# KEYS: replicas, info, then exai:circuit:<provider> of every provider. ARGV: id, JSON, lease
# seconds, then per provider (KEYS' order): milliseconds its circuit stays open here (0: not
# open), JSON. -> {the live replicas' JSON, {ms left, JSON} per provider (0, false: closed)}.
_ANNOUNCE: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  redis.call('HDEL', KEYS[2], gone)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local open = {}
for k = 3, #KEYS do
  local left, body = ARGV[2 * k - 2], ARGV[2 * k - 1]
  if tonumber(left) > 0 then redis.call('SET', KEYS[k], body, 'PX', left, 'NX') end
  table.insert(open, math.max(0, redis.call('PTTL', KEYS[k])))
  table.insert(open, redis.call('GET', KEYS[k]))
end
local live = redis.call('ZRANGE', KEYS[1], 0, -1)
return {redis.call('HMGET', KEYS[2], unpack(live)), open}
"""


# A provider's request-rate schedule (GCRA, as exai.providers.ratelimit keeps it for one daemon):
# the next free send time on the server's clock. KEYS: schedule. ARGV: interval, burst, within.
# -> {booked 1/0, seconds from now until the turn (text: Lua numbers reply as integers)}.
_BOOK_TURN: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local booked = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
local send_at = math.max(now, booked - (burst - 1) * interval)
if send_at - now > tonumber(ARGV[3]) then return {0, tostring(send_at - now)} end
local free = booked + interval
redis.call('SET', KEYS[1], string.format('%.6f', free), 'PX', math.ceil((free - now) * 1000) + 1000)
return {1, tostring(send_at - now)}
"""


def _circuit_key(provider: str) -> str:
    return f"{KEY_PREFIX}circuit:{provider}"


def _slots_key(provider: str) -> str:
    return f"{KEY_PREFIX}slots:{provider}"


class _Leases:
    """This replica's provider slots in Redis: taken by one script, renewed together every
    third of the lease by `renew_forever`, released by ZREM. A replica that stops renewing
    (it died, or lost Redis) loses its slots when their lease ends; nothing frees them by hand."""

    def __init__(self, client: coredis.Redis[str], location: RedisLocation, *, lease_s: float):
        self.lease_s = lease_s
        self._take = client.register_script(_TAKE_SLOT)
        self._book = client.register_script(_BOOK_TURN)
        self._renew = client.register_script(_RENEW_SLOTS)
        self._client = client
        self._location = location
        self.held: dict[str, set[str]] = {}  # provider -> lease ids held now

    @asynccontextmanager
    async def slot(self, provider: str, ceiling: int) -> AsyncIterator[None]:
        lease = uuid.uuid4().hex
        key = _slots_key(provider)
        try:
            while not await self._take([key], [ceiling, repr(self.lease_s), lease]):  # noqa: ASYNC110 - freed by any replica: no event here to wait on
                await trio.sleep(SLOT_POLL_S)
        except (RedisError, OSError) as exc:
            raise _unavailable(self._location, exc) from None
        self.held.setdefault(provider, set()).add(lease)
        try:
            yield
        finally:
            self.held[provider].discard(lease)
            with trio.CancelScope(shield=True), trio.move_on_after(RELEASE_S):
                try:
                    await self._client.zrem(key, [lease])
                except (RedisError, OSError) as exc:
                    logger.warning("a {} slot was not released ({}); its lease ends it", provider, exc)

    def rate_limiter(self, provider: str, rpm: int | None, *, env_var: str) -> RequestRateLimiter:
        if rpm is None:  # no ceiling: only the provider's own holds, which stay per replica
            return RequestRateLimiter(provider, rpm, env_var=env_var)
        key = f"{KEY_PREFIX}rate:{provider}"

        async def book(interval_s: float, burst: int, within_s: float) -> tuple[bool, float]:
            try:
                reply: list[str | int] = await self._book([key], [repr(interval_s), burst, repr(within_s)])
            except (RedisError, OSError) as exc:
                raise _unavailable(self._location, exc) from None
            booked, wait = reply
            return bool(booked), max(0.0, float(wait))

        return SharedRequestRateLimiter(provider, rpm, env_var=env_var, book=book)

    async def renew_forever(self) -> None:
        """Renew every held slot every third of the lease; a failed renewal is logged and
        tried again next time (a slot not renewed within its lease is lost, as it should)."""
        failing = False
        while True:
            await trio.sleep(self.lease_s / 3)
            try:
                for provider, leases in list(self.held.items()):
                    if leases:
                        await self._renew([_slots_key(provider)], [repr(self.lease_s), *leases])
                if failing:
                    logger.info("provider slot leases are renewed again")
                failing = False
            except (RedisError, OSError) as exc:
                if not failing:
                    logger.warning("provider slot leases could not be renewed: {}", exc)
                failing = True


def _thread_key(thread_id: str) -> str:
    return f"{KEY_PREFIX}thread:{thread_id}"


def _doc(thread: Thread) -> str:
    body = {
        "tool": thread.tool,
        "created": thread.created,
        "model": thread.model,
        "dropped": thread.dropped,
        "findings": thread.findings,
        "files": thread.files,
        "turns": [asdict(turn) for turn in thread.turns],
    }
    try:
        return orjson.dumps(body).decode()
    except TypeError:  # what orjson refuses (an int beyond 64 bits in a usage): json's text
        return json.dumps(body)


def _thread(thread_id: str, doc: str, updated: float, ttl_s: float) -> Thread:
    body = json.loads(doc)
    tool, created = str(body["tool"]), float(body["created"])
    return Thread(
        id=thread_id,
        tool=tool,
        created=created,
        updated=updated,
        expires=updated + ttl_s,
        turns=[Turn.from_json(t, tool=tool, created=created) for t in body["turns"]],
        findings=list(body["findings"]),
        files=list(body["files"]),
        model=body["model"],
        dropped=int(body["dropped"]),
    )


class _Threads:
    """The scripts on one client; every method one round trip. Errors are the client's."""

    def __init__(
        self, client: coredis.Redis[str], *, ttl_s: float, clock: Callable[[], float]
    ):
        self.ttl_s = ttl_s
        self.clock = clock
        self._expiry_s = max(1, math.ceil(ttl_s))
        self._read = client.register_script(_READ)
        self._write = client.register_script(_WRITE)
        self._list = client.register_script(_LIST)
        self._expire = client.register_script(_EXPIRE)
        self._client = client

    def _cutoff(self, now: float) -> float:
        return now - self.ttl_s

    async def read(self, thread_id: str, *, touch: bool) -> tuple[Thread, str]:
        """The live thread and its version; ThreadNotFound if there is none."""
        ids = lookup_ids(thread_id)
        if ids is None:
            raise ThreadNotFound(thread_id)
        now = self.clock()
        found: list[str] | None = await self._read(
            [_thread_key(ids[0]), INDEX_KEY],
            [repr(now), repr(self._cutoff(now)), self._expiry_s, "1" if touch else "0", ids[0]],
        )
        if not found:
            raise ThreadNotFound(thread_id)
        doc, updated, version = found
        return _thread(ids[0], str(doc), float(updated), self.ttl_s), str(version)

    async def write(self, thread: Thread, version: str) -> bool:
        """Store `thread` as used now if it is still at `version`; False if another write won."""
        now = self.clock()
        written: int = await self._write(
            [_thread_key(thread.id), INDEX_KEY],
            [_doc(thread), repr(now), self._expiry_s, version, thread.id, repr(self._cutoff(now))],
        )
        return bool(written)

    async def list(self) -> list[Thread]:
        flat: list[str] = await self._list([INDEX_KEY], [repr(self._cutoff(self.clock())), _thread_key("")])
        rows = [flat[i : i + 3] for i in range(0, len(flat), 3)]
        return [_thread(str(i), str(doc), float(upd), self.ttl_s) for i, doc, upd in rows]

    async def count(self) -> int:
        cutoff = self._cutoff(self.clock())
        return int(await self._client.zcount(INDEX_KEY, cutoff, "+inf"))

    def script(self, text: str) -> Script[str]:
        return self._client.register_script(text)

    async def expire(self) -> int:
        expired: int = await self._expire([INDEX_KEY], [repr(self._cutoff(self.clock())), _thread_key("")])
        return expired


# Tasks (exai.store.tasks): each is the hash exai:task:<id> (the fields of _TASK_FIELDS, times as
# the store's clock, `outcome` JSON) with a Redis key expiry of its ttl; the sorted sets
# exai:tasks (id by created: pages, oldest first, ties by id as SQLite orders them),
# exai:tasks:expiry (id by created + ttl: the sweep) and exai:tasks:working (a working task's id
# by its lease end: the unfinished count, renewals, failing a runner's work) index them.
TASK_INDEX_KEY: Final = f"{KEY_PREFIX}tasks"
TASK_EXPIRY_KEY: Final = f"{KEY_PREFIX}tasks:expiry"
TASK_WORKING_KEY: Final = f"{KEY_PREFIX}tasks:working"
_TASK_KEYS: Final = [TASK_INDEX_KEY, TASK_EXPIRY_KEY, TASK_WORKING_KEY]
_TASK_FIELDS: Final = (
    "id", "owner", "tool", "status", "message", "created", "updated", "ttl_s", "runner", "lease_until", "outcome"
)
_TASK_GET: Final = "{" + ", ".join(f"'{f}'" for f in _TASK_FIELDS) + "}"

# KEYS: index, expiry, working. ARGV: now, max unfinished, key expiry (whole seconds), key
# prefix, id, expires, lease until, then the record's field/value pairs. -> 1 created, 0 too many.
_CREATE_TASK: Final = """
local now = tonumber(ARGV[1])
local unfinished = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], ARGV[1], '+inf')) do
  local v = redis.call('HMGET', ARGV[4] .. id, 'status', 'expires')
  if v[1] == 'working' and tonumber(v[2]) >= now then unfinished = unfinished + 1 end
end
if unfinished >= tonumber(ARGV[2]) then return 0 end
local key = ARGV[4] .. ARGV[5]
redis.call('HSET', key, 'expires', ARGV[6], unpack(ARGV, 8))
redis.call('EXPIRE', key, ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[5])
redis.call('ZADD', KEYS[3], ARGV[7], ARGV[5])
return 1
"""
# KEYS: task. ARGV: now. -> the live task's fields, or false.
_GET_TASK: Final = f"""
local expires = redis.call('HGET', KEYS[1], 'expires')
if not expires or tonumber(expires) < tonumber(ARGV[1]) then return false end
return redis.call('HMGET', KEYS[1], unpack({_TASK_GET}))
"""
# KEYS: task, working. ARGV: now, id, status ("": only the message), message, outcome JSON.
# A working task gets the message (and with a status, ends); a finished one keeps its own.
# -> the record's fields as it stands after, or false (no live task).
_CHANGE_TASK: Final = f"""
local v = redis.call('HMGET', KEYS[1], 'status', 'expires')
if not v[1] then return false end
if v[1] == 'working' then
  if ARGV[3] == '' then
    redis.call('HSET', KEYS[1], 'message', ARGV[4], 'updated', ARGV[1])
  elseif tonumber(v[2]) >= tonumber(ARGV[1]) then
    redis.call('HSET', KEYS[1], 'status', ARGV[3], 'message', ARGV[4], 'outcome', ARGV[5], 'updated', ARGV[1])
    redis.call('ZREM', KEYS[2], ARGV[2])
  end
end
if tonumber(v[2]) < tonumber(ARGV[1]) then return false end
return redis.call('HMGET', KEYS[1], unpack({_TASK_GET}))
"""
# KEYS: working. ARGV: now, key prefix, runner, lease until ("": fail them), message, outcome
# JSON. -> how many of `runner`'s working tasks were renewed (or failed).
_RUNNER_TASKS: Final = """
local n = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local key = ARGV[2] .. id
  local v = redis.call('HMGET', key, 'status', 'runner')
  if not v[1] then
    redis.call('ZREM', KEYS[1], id)
  elseif v[1] == 'working' and v[2] == ARGV[3] then
    n = n + 1
    if ARGV[4] ~= '' then
      redis.call('HSET', key, 'lease_until', ARGV[4])
      redis.call('ZADD', KEYS[1], ARGV[4], id)
    else
      redis.call('HSET', key, 'status', 'failed', 'message', ARGV[5], 'outcome', ARGV[6], 'updated', ARGV[1])
      redis.call('ZREM', KEYS[1], id)
    end
  end
end
return n
"""
# KEYS: index. ARGV: now, key prefix, owner ("": anyone's), cursor created ("": none), cursor
# id, limit (-1: all), "1" newest first. -> the records' fields, in order.
_LIST_TASKS: Final = f"""
local function later(a, b)  -- a sorts after b, byte by byte (as sorted sets and SQLite order)
  for i = 1, math.min(#a, #b) do
    local x, y = a:byte(i), b:byte(i)
    if x ~= y then return x > y end
  end
  return #a > #b
end
local now, limit = tonumber(ARGV[1]), tonumber(ARGV[6])
local ids
if ARGV[7] == '1' then
  ids = redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', '-inf')
else
  ids = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[4] == '' and '-inf' or ARGV[4], '+inf', 'WITHSCORES')
end
local out = {{}}
local step = ARGV[7] == '1' and 1 or 2
for i = 1, #ids, step do
  if limit >= 0 and #out >= limit then break end
  local id = ids[i]
  local skip = step == 2 and ARGV[4] ~= '' and tonumber(ids[i + 1]) == tonumber(ARGV[4]) and not later(id, ARGV[5])
  if not skip then
    local v = redis.call('HMGET', ARGV[2] .. id, 'owner', 'expires')
    if v[1] and tonumber(v[2]) >= now and (ARGV[3] == '' or v[1] == ARGV[3]) then
      table.insert(out, redis.call('HMGET', ARGV[2] .. id, unpack({_TASK_GET})))
    end
  end
end
return out
"""
# KEYS: index. ARGV: now, key prefix. -> {status, lease until} of every live task.
_COUNT_TASKS: Final = """
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local v = redis.call('HMGET', ARGV[2] .. id, 'status', 'lease_until', 'expires')
  if v[1] and tonumber(v[3]) >= tonumber(ARGV[1]) then table.insert(out, {v[1], v[2]}) end
end
return out
"""
# KEYS: index, expiry, working. ARGV: now, key prefix. -> how many expired tasks were deleted.
_EXPIRE_TASKS: Final = """
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1])
for _, id in ipairs(gone) do
  redis.call('DEL', ARGV[2] .. id)
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[3], id)
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1])
return #gone
"""


def _task_key(task_id: str) -> str:
    return f"{KEY_PREFIX}task:{task_id}"


def _task_record(fields: Sequence[str | None]) -> TaskRecord:
    v = dict(zip(_TASK_FIELDS, fields, strict=True))
    outcome = v["outcome"]
    return TaskRecord(
        id=str(v["id"]),
        owner=str(v["owner"]),
        tool=str(v["tool"]),
        status=TaskStatus(str(v["status"])),
        message=str(v["message"]),
        created=float(str(v["created"])),
        updated=float(str(v["updated"])),
        ttl_s=float(str(v["ttl_s"])),
        runner=str(v["runner"]),
        lease_until=float(str(v["lease_until"])),
        outcome=None if outcome is None else orjson.loads(outcome),
    )


def _json(value: object) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # what orjson refuses (an int beyond 64 bits): json's text
        return json.dumps(value)


class _Tasks:
    """The task scripts on one client; every method one round trip. Errors are the client's."""

    def __init__(self, client: coredis.Redis[str], *, clock: Callable[[], float]):
        self.clock = clock
        self._create = client.register_script(_CREATE_TASK)
        self._get = client.register_script(_GET_TASK)
        self._change = client.register_script(_CHANGE_TASK)
        self._runner = client.register_script(_RUNNER_TASKS)
        self._list = client.register_script(_LIST_TASKS)
        self._count = client.register_script(_COUNT_TASKS)
        self._expire = client.register_script(_EXPIRE_TASKS)

    async def create(self, task: NewTask, max_unfinished: int) -> TaskRecord:
        now = self.clock()
        record = TaskRecord(
            task.id, task.owner, task.tool, TaskStatus.WORKING, task.message,
            now, now, task.ttl_s, task.runner, now + task.lease_s, None,
        )  # fmt: skip
        pairs = [
            "id", task.id, "owner", task.owner, "tool", task.tool, "status", record.status.value,
            "message", task.message, "created", repr(now), "updated", repr(now),
            "ttl_s", repr(task.ttl_s), "runner", task.runner, "lease_until", repr(record.lease_until),
            "outcome", "null",
        ]  # fmt: skip
        created: int = await self._create(
            _TASK_KEYS,
            [
                repr(now), max_unfinished, max(1, math.ceil(task.ttl_s)), _task_key(""), task.id,
                repr(record.expires), repr(record.lease_until), *pairs,
            ],
        )  # fmt: skip
        if not created:
            raise TooManyTasks(max_unfinished)
        return record

    async def get(self, task_id: str, owner: str | None) -> TaskRecord:
        now = self.clock()
        fields: list[str | None] | None = await self._get([_task_key(task_id)], [repr(now)])
        if not fields or (owner is not None and fields[1] != owner):
            raise TaskNotFound(task_id)
        return _task_record(fields).as_read(now)

    async def list(
        self, owner: str | None, after: TaskCursor | None, limit: int, *, newest_first: bool = False
    ) -> list[TaskRecord]:
        now = self.clock()
        cursor = ("", "") if after is None else (repr(after[0]), after[1])
        rows: list[list[str | None]] = await self._list(
            [TASK_INDEX_KEY],
            [repr(now), _task_key(""), owner or "", *cursor, limit, "1" if newest_first else "0"],
        )
        return [_task_record(row).as_read(now) for row in rows]

    async def update(self, task_id: str, message: str) -> None:
        await self._change([_task_key(task_id), TASK_WORKING_KEY], [repr(self.clock()), task_id, "", message, ""])

    async def finish(
        self, task_id: str, status: TaskStatus, message: str, outcome: dict[str, Any] | None
    ) -> TaskRecord:
        now = self.clock()
        fields: list[str | None] | None = await self._change(
            [_task_key(task_id), TASK_WORKING_KEY], [repr(now), task_id, status.value, message, _json(outcome)]
        )
        if not fields:
            raise TaskNotFound(task_id)
        return _task_record(fields).as_read(now)

    async def renew(self, runner: str, lease_s: float) -> int:
        now = self.clock()
        renewed: int = await self._runner([TASK_WORKING_KEY], [repr(now), _task_key(""), runner, repr(now + lease_s), "", ""])
        return renewed

    async def fail(self, runner: str, message: str) -> int:
        args = [repr(self.clock()), _task_key(""), runner, "", message, _json(lost_outcome(message))]
        failed: int = await self._runner([TASK_WORKING_KEY], args)
        return failed

    async def count(self) -> dict[TaskStatus, int]:
        now = self.clock()
        counts = dict.fromkeys(TaskStatus, 0)
        rows: list[list[str]] = await self._count([TASK_INDEX_KEY], [repr(now), _task_key("")])
        for status_text, lease_until in rows:
            status = TaskStatus(status_text)
            if status is TaskStatus.WORKING and float(lease_until) < now:
                status = TaskStatus.FAILED
            counts[status] += 1
        return counts

    async def expire(self) -> int:
        expired: int = await self._expire(_TASK_KEYS, [repr(self.clock()), _task_key("")])
        return expired


def _unavailable(location: RedisLocation, exc: BaseException) -> StoreUnavailable:
    reason = str(exc) or type(exc).__name__
    return StoreUnavailable(f"the conversation store {location} is unavailable: {reason}")


class RedisStore:
    """The `Store` on a Redis server. A cancelled call either wrote its script or did not
    (a script runs whole); the client's connection stays usable. Built by `open_redis`."""

    def __init__(
        self, threads: _Threads, tasks: _Tasks, leases: _Leases, location: RedisLocation, *, max_turns: int
    ):
        self._threads = threads
        self._tasks = tasks
        self._leases = leases
        self._announce = threads.script(_ANNOUNCE)
        self._location = location
        self._max_turns = max_turns
        self._holds = ThreadHolds()

    @property
    def max_turns(self) -> int:
        return self._max_turns

    async def get(self, thread_id: str) -> Thread:
        thread, _ = await self._call(self._threads.read(thread_id, touch=True))
        return thread

    async def append(
        self,
        thread_id: str | None,
        tool: str,
        turns: list[Turn],
        *,
        findings: Sequence[str] = (),
        files: Sequence[str] = (),
        model: str | None = None,
    ) -> Appended:
        for _ in range(WRITE_ATTEMPTS):
            if thread_id is None:
                now = self._threads.clock()
                thread = Thread(str(uuid.uuid4()), tool, now, now, now, [], [], [], None, 0)
                version = "0"
            else:
                thread, version = await self._call(self._threads.read(thread_id, touch=False))
            every = thread.turns + list(turns)
            dropped_now = max(0, len(every) - self._max_turns)
            thread.turns = every[dropped_now:]
            thread.dropped += dropped_now
            thread.findings.extend(findings)
            thread.files.extend(dict.fromkeys(f for f in files if f not in thread.files))
            thread.model = model or thread.model
            if await self._call(self._threads.write(thread, version)):
                return Appended(thread.id, dropped_now)
        raise StoreUnavailable(
            f"the conversation store {self._location} is too busy: thread {thread_id} was"
            f" written by others {WRITE_ATTEMPTS} times while this call tried"
        )

    def hold(self, thread_id: str | None) -> AbstractAsyncContextManager[None]:
        """Serialise this daemon's calls on one thread, first come first served; None holds
        nothing. Another replica's call on the same thread does not wait, but never loses
        or overwrites a write: `append` writes only onto the version it read."""
        return self._holds.hold(thread_id)

    async def list(self) -> list[Thread]:
        return await self._call(self._threads.list())

    async def count(self) -> int:
        return await self._call(self._threads.count())

    async def expire(self) -> int:
        return await self._call(self._threads.expire())

    # -- tasks: each call one script -----------------------------------------------------

    async def create_task(self, task: NewTask, *, max_unfinished: int) -> TaskRecord:
        """The unfinished count and the insert in one script: atomic across replicas."""
        return await self._call(self._tasks.create(task, max_unfinished))

    async def task(self, task_id: str, owner: str | None) -> TaskRecord:
        return await self._call(self._tasks.get(task_id, owner))

    async def tasks(
        self, owner: str | None, *, after: TaskCursor | None = None, limit: int = 100
    ) -> builtins.list[TaskRecord]:
        return await self._call(self._tasks.list(owner, after, limit))

    async def update_task(self, task_id: str, message: str) -> None:
        await self._call(self._tasks.update(task_id, message))

    async def finish_task(
        self, task_id: str, status: TaskStatus, message: str, outcome: dict[str, Any] | None
    ) -> TaskRecord:
        return await self._call(self._tasks.finish(task_id, status, message, outcome))

    async def renew_tasks(self, runner: str, lease_s: float) -> int:
        return await self._call(self._tasks.renew(runner, lease_s))

    async def fail_tasks(self, runner: str, message: str) -> int:
        return await self._call(self._tasks.fail(runner, message))

    async def count_tasks(self) -> dict[TaskStatus, int]:
        return await self._call(self._tasks.count())

    async def expire_tasks(self) -> int:
        return await self._call(self._tasks.expire())

    def provider_slot(self, provider: str, ceiling: int) -> AbstractAsyncContextManager[None]:
        """A lease in `exai:slots:<provider>`: fewer than `ceiling` held in the deployment."""
        return self._leases.slot(provider, ceiling)

    def rate_limiter(self, provider: str, rpm: int | None, *, env_var: str) -> RequestRateLimiter:
        """EXAI_*_RPM for the deployment: the schedule in `exai:rate:<provider>`, one script a turn."""
        return self._leases.rate_limiter(provider, rpm, env_var=env_var)

    async def announce(
        self, replica: Replica, lease_s: float, circuits: Mapping[str, OpenCircuit]
    ) -> Deployment:
        """One script: this replica's lease renewed, the expired ones dropped, the live listed;
        this replica's open circuits published, every open one read back."""
        args: list[str | int] = [replica["id"], orjson.dumps(replica).decode(), repr(lease_s)]
        for provider in PROVIDERS:
            here = circuits.get(provider)
            body = {} if here is None else {"reason": here.reason, "failures": here.failures}
            args += [0 if here is None else max(1, int(here.seconds * 1000)), orjson.dumps(body).decode()]
        keys = [REPLICAS_KEY, REPLICA_INFO_KEY, *(_circuit_key(p) for p in PROVIDERS)]
        found: list[list[str | int | None]] = await self._call(self._announce(keys, args))
        replicas, flat = found
        live = [cast(Replica, json.loads(str(text))) for text in replicas]
        open_now = {}
        for provider, left, text in zip(PROVIDERS, flat[0::2], flat[1::2], strict=True):
            if left and text:
                body = json.loads(str(text))
                open_now[provider] = OpenCircuit(int(left) / 1000, body["reason"], body["failures"])
        return Deployment(sorted(live, key=lambda r: (r["started"], r["id"])), open_now)

    async def aclose(self) -> None:
        """Nothing of its own: the client is closed by `open_redis`."""

    async def _call(self, work: Awaitable[T]) -> T:
        try:
            return await work
        except (RedisError, OSError) as exc:
            raise _unavailable(self._location, exc) from None


def _client(location: RedisLocation) -> coredis.Redis[str]:
    return coredis.Redis(
        host=location.host,
        port=location.port,
        db=location.db,
        password=location.password,
        decode_responses=True,
        connect_timeout=CONNECT_TIMEOUT_S,
        stream_timeout=COMMAND_TIMEOUT_S,
    )


def _single(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception a group wraps (through nested groups), or None if it holds more."""
    inner: BaseException = group
    while isinstance(inner, BaseExceptionGroup):
        if len(inner.exceptions) != 1:
            return None
        inner = inner.exceptions[0]
    return inner


@asynccontextmanager
async def open_redis(
    location: RedisLocation,
    *,
    ttl_s: float,
    max_turns: int,
    clock: Callable[[], float],
    lease_s: float,
) -> AsyncIterator[RedisStore]:
    """The store on the Redis server at `location`, its client closed on exit and its slot
    leases renewed meanwhile. Opening does not wait for the server: while it is unreachable
    each call raises StoreUnavailable, and calls succeed again as soon as it is back."""
    client = _client(location)
    try:
        async with client, trio.open_nursery() as nursery:
            leases = _Leases(client, location, lease_s=lease_s)
            nursery.start_soon(leases.renew_forever)
            threads = _Threads(client, ttl_s=ttl_s, clock=clock)
            tasks = _Tasks(client, clock=clock)
            yield RedisStore(threads, tasks, leases, location, max_turns=max_turns)
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The client's connection pool runs in a task group, which wraps whatever leaves this
        # block; callers see the one exception they would see from any other backend.
        single = _single(group)
        if single is None:
            raise
        raise single from None


class RedisReader:
    """The `ThreadReader` on a Redis server: reads without touching, each command in a trio
    run of its own on a short-lived thread (the CLI may itself be inside a trio run)."""

    def __init__(self, location: RedisLocation, *, ttl_s: float, max_turns: int):
        self.location = location
        self.ttl_s = ttl_s
        self.max_turns = max_turns

    @property
    def where(self) -> str:
        return str(self.location)

    def threads(self) -> list[Thread]:
        return self._run(lambda threads, _: threads.list())

    def thread(self, thread_id: str) -> Thread:
        async def one(threads: _Threads, _: _Tasks) -> Thread:
            thread, _version = await threads.read(thread_id, touch=False)
            return thread

        return self._run(one)

    def tasks(self) -> list[TaskRecord]:
        return self._run(lambda _, tasks: tasks.list(None, None, -1, newest_first=True))

    def task(self, task_id: str) -> TaskRecord:
        return self._run(lambda _, tasks: tasks.get(task_id, None))

    def _run(self, work: Callable[[_Threads, _Tasks], Awaitable[T]]) -> T:
        async def main() -> T:
            async with _client(self.location) as client:
                threads = _Threads(client, ttl_s=self.ttl_s, clock=time.time)
                return await work(threads, _Tasks(client, clock=time.time))

        outcome: list[T] = []
        failure: list[BaseException] = []

        def run() -> None:
            try:
                outcome.append(trio.run(main))
            except BaseException as exc:  # carried to the calling thread, raised there
                failure.append(exc)

        worker = threading.Thread(target=run, name="exai-redis-reader")
        worker.start()
        worker.join()
        if failure:
            exc = failure[0]
            if isinstance(exc, BaseExceptionGroup):
                exc = _single(exc) or exc
            if isinstance(exc, (RedisError, OSError)):
                raise StoreUnavailable(
                    f"cannot read the conversation store {self.location}: {exc}"
                ) from None
            raise exc
        return outcome[0]


__all__ = ["RedisReader", "RedisStore", "open_redis"]

