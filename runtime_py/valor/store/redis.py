"""The Redis backend, for several machines sharing one store: ``redis://host:port/db``
through the ``redis`` package's asyncio client. Each commit is one Lua script, so Redis runs
its checks and writes with nothing in between; a read is one plain ``GET``.

Layout, under ``valor:``: ``valor:version`` (the store's version counter),
``valor:{namespace}:k`` (a sorted set of the namespace's keys, for listing in order) and
``valor:{namespace}:e:{key}`` (a string: ``<version>:<expires_at or nothing>:<encoded value>``,
so that a read is a single ``GET`` and one bulk reply). An entry with an expiry also gets
Redis's own (``PXAT``), which removes it in time.

Speed (issue 22): every command costs a round trip and redis-py's own work per command and per
reply element, which is most of a store operation's time. So a read is one ``GET``; a lone set
or increment (what ``store.set`` and ``store.increment`` send) runs a short script of its own
with three keys and three arguments and answers one integer or one string; anything else runs
the general batch script. Scripts are called by their SHA (``EVALSHA``), loaded again if the
server lost them. Commands go from the backend to a connection it keeps idle between calls:
packed by the backend (a lone write's start packed once per namespace) and timed by one
watchdog timer, without ``execute_command``'s wrappers, redis-py's socket timeout (a task per
write) or its pool's lock, metrics and readiness probe (about 10 µs a call).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any, NamedTuple

from .backend import Check, Commit, Mutation, Record
from .errors import NotAnInteger, StoreFull, StoreUnavailable
from .limits import MAX_SAFE_INTEGER
from .sqlite import prefix_end
from .urls import redacted

ROOT = "valor"
_COUNTER = f"{ROOT}:version".encode()
SOCKET_TIMEOUT = 5.0
"""Seconds a command may take before the store counts as unavailable (503)."""
MAX_IDLE = 64
"""Connections kept open between calls; more are closed once their call is answered."""

# An entry's parts: {value, version, expires_at ('' for never)}, or nil when there is none or
# it expired by the caller's clock (expired counts as absent, as in every backend).
_LIVE = """
local function parsed(data, now)
  if not data then return nil end
  local first = string.find(data, ':', 1, true)
  local second = string.find(data, ':', first + 1, true)
  local exp = string.sub(data, first + 1, second - 1)
  if exp ~= '' and tonumber(exp) <= now then return nil end
  return {string.sub(data, second + 1), string.sub(data, 1, first - 1), exp}
end
local function live(k, now)
  return parsed(redis.call('GET', k), now)
end
"""

# Write an entry under a version; an expiry also becomes Redis's own (a plain SET drops any).
_PUT = """
local function put(k, version, value, exp)
  local data = version .. ':' .. exp .. ':' .. value
  if exp == '' then
    redis.call('SET', k, data)
  else
    redis.call('SET', k, data, 'PXAT', math.ceil(tonumber(exp) * 1000))
  end
end
"""

# The sum of an encoded integer (nil: 0) and by, or an error reply naming the key.
_ADD = """
local function add(value, by, member)
  local current = 0
  if value then
    local digits = string.match(value, '^j(%-?%d+)$')
    if not digits then return nil, redis.error_reply('VALOR_NOT_AN_INTEGER ' .. member) end
    current = tonumber(digits)
  end
  local total = current + tonumber(by)
  if math.abs(total) > MAX_SAFE then
    return nil, redis.error_reply('VALOR_OUT_OF_RANGE ' .. member)
  end
  return string.format('%.0f', total)
end
""".replace("MAX_SAFE", str(MAX_SAFE_INTEGER))

# The lone set and increment below are written out in full rather than through ``put``,
# ``live`` and ``add``: each is most of a plug-in's writes, and the functions' closures,
# tables and extra string calls were about a third of the increment script's time in Redis
# (INFO commandstats: 14 against 11 us per EVALSHA on the 2-core machine under load).

# A lone set: KEYS counter, key set, entry; ARGV member, encoded value, expires_at or ''.
# Answers the version.
_SET = """
local version = redis.call('INCR', KEYS[1])
local exp = ARGV[3]
if exp == '' then
  redis.call('SET', KEYS[3], string.format('%.0f', version) .. '::' .. ARGV[2])
else
  redis.call('SET', KEYS[3], string.format('%.0f', version) .. ':' .. exp .. ':' .. ARGV[2],
    'PXAT', math.ceil(tonumber(exp) * 1000))
end
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return version
"""

# A lone increment: KEYS counter, key set, entry; ARGV member, by, now. The expiry stays as it
# was; an entry expired by the caller's clock counts as absent (its value is not read). Only
# an entry made anew joins the key set. Answers 'version:sum' as a status reply (one line:
# cheaper to read than a bulk string).
_INCREMENT = """
local data = redis.call('GET', KEYS[3])
local exp, sum = '', tonumber(ARGV[2])
if data then
  local e, digits = string.match(data, '^%d+:([^:]*):j(%-?%d+)$')
  if not e then e = string.match(data, '^%d+:([^:]*):') end
  if e ~= '' and tonumber(e) <= tonumber(ARGV[3]) then
    data = nil
  elseif not digits then
    return redis.error_reply('VALOR_NOT_AN_INTEGER ' .. ARGV[1])
  else
    exp, sum = e, sum + tonumber(digits)
  end
end
if sum > MAX_SAFE or sum < -MAX_SAFE then
  return redis.error_reply('VALOR_OUT_OF_RANGE ' .. ARGV[1])
end
sum = string.format('%.0f', sum)
local version = string.format('%.0f', redis.call('INCR', KEYS[1]))
if exp == '' then
  redis.call('SET', KEYS[3], version .. '::j' .. sum)
else
  redis.call('SET', KEYS[3], version .. ':' .. exp .. ':j' .. sum,
    'PXAT', math.ceil(tonumber(exp) * 1000))
end
if not data then redis.call('ZADD', KEYS[2], 0, ARGV[1]) end
return redis.status_reply(version .. ':' .. sum)
""".replace("MAX_SAFE", str(MAX_SAFE_INTEGER))

# Any batch. KEYS: version counter, key set, entry keys...; ARGV: now, #checks,
# (entry, version)..., #mutations, (kind, entry, member, value, expires_at, by)...
# Answers 0 (a check failed), -1 (nothing to write), the version, or 'version:sum:sum...'.
_COMMIT = (
    _LIVE
    + _PUT
    + _ADD
    + """
local now = tonumber(ARGV[1])
local i = 3
for _ = 1, tonumber(ARGV[2]) do
  local r = live(KEYS[tonumber(ARGV[i])], now)
  local have = r and r[2] or ''
  if have ~= ARGV[i + 1] then return 0 end
  i = i + 2
end
local count = tonumber(ARGV[i])
i = i + 1
local pending, order, sums = {}, {}, {}
for _ = 1, count do
  local kind, k, member = ARGV[i], KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2]
  if pending[k] == nil then table.insert(order, k) end
  if kind == 'set' then
    pending[k] = {ARGV[i + 3], ARGV[i + 4], member}
  elseif kind == 'delete' then
    pending[k] = {false, '', member}
  else
    local before = pending[k]
    if before == nil then
      local r = live(k, now)
      before = r and {r[1], r[3]} or {false, ''}
    end
    local total, failed = add(before[1], ARGV[i + 5], member)
    if failed then return failed end
    table.insert(sums, total)
    pending[k] = {'j' .. total, before[2], member}
  end
  i = i + 6
end
if #order == 0 then return -1 end
local version = redis.call('INCR', KEYS[1])
local rendered = string.format('%.0f', version)
for _, k in ipairs(order) do
  local entry = pending[k]
  if entry[1] then
    put(k, rendered, entry[1], entry[2])
    redis.call('ZADD', KEYS[2], 0, entry[3])
  else
    redis.call('DEL', k)
    redis.call('ZREM', KEYS[2], entry[3])
  end
end
if #sums == 0 then return version end
return redis.status_reply(rendered .. ':' .. table.concat(sums, ':'))
"""
)

_LIST = (
    _LIVE
    + """
-- KEYS: key set; ARGV: now, min, max, limit, entry key prefix. Answers member, entry...
local now, limit = tonumber(ARGV[1]), tonumber(ARGV[4])
local found, start = {}, ARGV[2]
while #found < limit * 2 do
  local members = redis.call('ZRANGEBYLEX', KEYS[1], start, ARGV[3], 'LIMIT', 0, limit)
  if #members == 0 then break end
  for _, member in ipairs(members) do
    local k = ARGV[5] .. member
    local data = redis.call('GET', k)
    if not data then
      redis.call('ZREM', KEYS[1], member)  -- Redis expired it: drop its name too
    elseif parsed(data, now) then
      table.insert(found, member)
      table.insert(found, data)
      if #found >= limit * 2 then break end
    end
  end
  start = '(' .. members[#members]
end
return found
"""
)


_SHA = {
    script: hashlib.sha1(script.encode()).hexdigest().encode()
    for script in (_SET, _INCREMENT, _COMMIT, _LIST)
}
"""Each script's SHA, as Redis names it (EVALSHA), without asking Redis."""


class RedisBackend:
    """Entries in a Redis server (7.0 or later), shared by every process that names it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.description = redacted(url)
        self._client: Any = None
        self._idle: list[Any] = []  # connected, between calls, the last used last
        self._names: dict[str, _Names] = {}
        # Calls waiting for Redis (task -> when it started, oldest first), the timer that
        # ends those waiting too long, and those it cancelled (``_call``, ``_expire``).
        self._in_flight: dict[asyncio.Task[Any], float] = {}
        self._watchdog: asyncio.TimerHandle | None = None
        self._expired: set[asyncio.Task[Any]] = set()
        self._no_script: type[Exception] = Exception
        self._response_error: type[Exception] = Exception

    def _connected(self) -> Any:
        if self._client is None:
            import redis.asyncio
            from redis.exceptions import NoScriptError, ResponseError

            self._no_script = NoScriptError
            self._response_error = ResponseError
            # No socket timeout (redis-py's default is 5 s): ``_call`` times each command
            # itself, more cheaply (redis-py times each write with ``wait_for``: a task and
            # a turn of the event loop more per command, a third of a command's client time).
            self._client = redis.asyncio.from_url(
                self.url, socket_timeout=None, socket_connect_timeout=SOCKET_TIMEOUT
            )
        return self._client

    def _keys(self, namespace: str) -> _Names:
        """The namespace's names and command heads, encoded once."""
        names = self._names.get(namespace)
        if names is None:
            key_set = f"{ROOT}:{namespace}:k".encode()
            names = self._names[namespace] = _Names(
                key_set,
                f"{ROOT}:{namespace}:e:".encode(),
                _head(_SET, key_set),
                _head(_INCREMENT, key_set),
            )
        return names

    async def get(self, namespace: str, key: str, now: float) -> Record | None:
        try:
            entry = self._keys(namespace).entries + key.encode()
            data = await self._call(b"*2\r\n$3\r\nGET\r\n$%d\r\n%b\r\n" % (len(entry), entry))
        except Exception as exc:
            self._reraise(exc)
            raise
        if data is None:
            return None
        return _record(key, data, now)

    async def list(
        self, namespace: str, prefix: str, start_after: str | None, limit: int, now: float
    ) -> list[Record]:
        if start_after is not None and start_after >= prefix:
            low = b"(" + start_after.encode()
        else:
            low = b"[" + prefix.encode()
        end = prefix_end(prefix)
        high = b"(" + end.encode() if end is not None else b"+"
        key_set, entries, _, _ = self._keys(namespace)
        flat = await self._run(_LIST, key_set, repr(now), low, high, limit, entries, keys=1)
        records = []
        for index in range(0, len(flat), 2):
            record = _record(flat[index].decode(), flat[index + 1], now)
            if record is not None:
                records.append(record)
        return records

    async def commit(
        self, namespace: str, checks: Sequence[Check], mutations: Sequence[Mutation], now: float
    ) -> Commit:
        key_set, entries, set_head, increment_head = self._keys(namespace)
        if not checks and len(mutations) == 1:  # store.set and store.increment
            mutation = mutations[0]
            key = mutation.key.encode()
            if mutation.kind == "set":
                expires = b"" if mutation.expires_at is None else repr(mutation.expires_at).encode()
                command = _lone(set_head, entries + key, key, mutation.value, expires)
                return Commit(True, await self._evalsha(_SET, command))
            if mutation.kind == "increment":
                by = str(mutation.by).encode()
                command = _lone(increment_head, entries + key, key, by, repr(now).encode())
                version, total = (await self._evalsha(_INCREMENT, command)).split(b":")
                return Commit(True, int(version), (int(total),))
        keys: list[Any] = [_COUNTER, key_set]
        index: dict[str, int] = {}

        def entry(key: str) -> int:
            if key not in index:
                keys.append(entries + key.encode())
                index[key] = len(keys)  # Lua counts from 1
            return index[key]

        args: list[Any] = [repr(now), len(checks)]
        for check in checks:
            args += [entry(check.key), "" if check.version is None else check.version]
        args.append(len(mutations))
        for mutation in mutations:
            expires = "" if mutation.expires_at is None else repr(mutation.expires_at)
            args += [
                mutation.kind,
                entry(mutation.key),
                mutation.key,
                mutation.value if mutation.value is not None else b"",
                expires,
                mutation.by,
            ]
        answer = await self._run(_COMMIT, *keys, *args, keys=len(keys))
        if isinstance(answer, int):
            if answer == 0:
                return Commit(False)
            return Commit(True) if answer < 0 else Commit(True, answer)
        version, *sums = answer.split(b":")
        return Commit(True, int(version), tuple(int(total) for total in sums))

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        idle, self._idle = self._idle, []
        for connection in idle:
            await connection.disconnect()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _call(self, command: bytes) -> Any:
        """One packed command on a connection kept idle between calls, its reply as Redis
        gave it; ``TimeoutError`` (an ``OSError``) once it has taken ``SOCKET_TIMEOUT`` seconds.

        ``execute_command`` wraps each command in retries, timing hooks and callbacks, and
        packs it at about three times ``_packed``'s cost. Retries are no loss: a write script
        resent after a lost connection could be applied twice (an increment counted twice),
        and a failed read is answered 503 at once; the next call connects again."""
        client = self._connected()
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self._in_flight[task] = loop.time()
        if self._watchdog is None:
            self._watchdog = loop.call_later(SOCKET_TIMEOUT, self._expire)
        try:
            idle = self._idle
            connection = idle.pop() if idle else None
            if connection is None or not _ready(connection):
                if connection is not None:
                    await connection.disconnect()
                pool = client.connection_pool
                connection = pool.connection_class(**pool.connection_kwargs)
                await connection.connect()
            try:
                await connection.send_packed_command(command, False)
                reply = await connection.read_response()
            except self._response_error:
                self._keep(idle, connection)  # it read the whole (error) reply
                raise
            except BaseException:
                await connection.disconnect()  # a reply may be half read
                raise
            self._keep(idle, connection)
            return reply
        except asyncio.CancelledError:
            if task not in self._expired:
                raise
            self._expired.remove(task)
            if task.uncancel():
                raise  # its caller cancelled it as well
            raise TimeoutError(f"no answer within {SOCKET_TIMEOUT:g} s") from None
        finally:
            del self._in_flight[task]

    def _keep(self, idle: list[Any], connection: Any) -> None:
        """Keep ``connection`` for the next call, unless the backend was closed meanwhile
        (``idle`` is no longer its list) or enough are kept already."""
        if idle is self._idle and len(idle) < MAX_IDLE:
            idle.append(connection)
        else:
            task = asyncio.ensure_future(connection.disconnect())
            _closing.add(task)
            task.add_done_callback(_closing.discard)

    def _expire(self) -> None:
        """Cancel the calls that have taken ``SOCKET_TIMEOUT`` seconds (each raises
        ``TimeoutError``), and wake again when the oldest of the others is due.

        One timer for every call in flight: an ``asyncio.timeout`` around each call cost
        about a tenth of a command's client instructions (a handle made, pushed on the
        loop's heap and cancelled)."""
        self._watchdog = None
        loop = asyncio.get_running_loop()
        due = loop.time() - SOCKET_TIMEOUT
        for task, started in self._in_flight.items():  # the oldest first
            if started > due:
                self._watchdog = loop.call_at(started + SOCKET_TIMEOUT, self._expire)
                return
            if task not in self._expired:
                self._expired.add(task)
                task.cancel()

    async def _run(self, script: str, *arguments: Any, keys: int = 3) -> Any:
        """``script`` on ``arguments`` (its first ``keys`` are its KEYS)."""
        return await self._evalsha(script, _packed(b"EVALSHA", _SHA[script], keys, *arguments))

    async def _evalsha(self, script: str, command: bytes) -> Any:
        """``command``, an EVALSHA of ``script``'s SHA, loading the script first if Redis
        does not know it (a new server, a restarted or flushed one)."""
        try:
            try:
                return await self._call(command)
            except self._no_script:
                await self._call(_packed(b"SCRIPT", b"LOAD", script.encode()))
                return await self._call(command)
        except Exception as exc:
            self._reraise(exc)
            raise

    def _reraise(self, exc: Exception) -> None:
        """Raise Redis's errors as the store's: unreachable -> StoreUnavailable, out of memory
        -> StoreFull, a script's refusal -> NotAnInteger. Returns for anything else (a bug),
        which the caller raises as it is."""
        from redis import exceptions

        if isinstance(exc, exceptions.ResponseError):
            message = str(exc)
            for code in ("VALOR_NOT_AN_INTEGER ", "VALOR_OUT_OF_RANGE "):
                if code in message:
                    key = message.split(code, 1)[1]
                    problem = (
                        "its value is not an integer"
                        if "NOT_AN" in code
                        else f"the sum leaves the safe integer range (±{MAX_SAFE_INTEGER})"
                    )
                    raise NotAnInteger(f"cannot increment store key {key!r}: {problem}") from None
            if message.startswith("OOM"):
                raise StoreFull(self.description, message) from exc
            return
        if isinstance(exc, (exceptions.RedisError, OSError)):  # connection, timeout, ...
            raise StoreUnavailable(self.description, f"{type(exc).__name__}: {exc}") from exc


_closing: set[asyncio.Future[Any]] = set()  # connections being closed, kept from the GC


def _ready(connection: Any) -> bool:
    """Whether a kept connection can take a command: still open at both ends. Redis closes
    idle clients (``timeout``) and restarts; a write sent on such a connection would fail
    without telling whether it was applied. Its stream's end is seen without a system call
    (redis-py's own probe, ``can_read``, costs a timeout context per call)."""
    reader = getattr(connection, "_reader", None)
    return connection.is_connected and reader is not None and not reader.at_eof()


def _record(key: str, data: bytes, now: float) -> Record | None:
    """An entry as ``GET`` answers it (``version:expires_at:value``), or None if expired."""
    version, expires, value = data.split(b":", 2)
    if expires:
        expires_at = float(expires)
        if expires_at <= now:
            return None
        return Record(key, value, int(version), expires_at)
    return Record(key, value, int(version))


class _Names(NamedTuple):
    """A namespace's names in Redis, and the start of its lone set's and increment's
    commands (EVALSHA, the script's SHA, 3 keys, the counter, the key set)."""

    key_set: bytes
    entries: bytes  # + key: an entry
    set_head: bytes
    increment_head: bytes


def _head(script: str, key_set: bytes) -> bytes:
    """The first five of a lone script's nine parts, packed (``_lone`` adds the rest)."""
    head = _packed(b"EVALSHA", _SHA[script], b"3", _COUNTER, key_set)
    return b"*9\r\n" + head.removeprefix(b"*5\r\n")


def _lone(head: bytes, entry: bytes, member: bytes, value: bytes, last: bytes) -> bytes:
    """A lone set's or increment's command: ``head`` and four more bulk strings, packed in
    one step (``_packed``'s loop over nine parts was most of a tenth of a lone write's client
    instructions)."""
    return head + b"$%d\r\n%b\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (
        len(entry),
        entry,
        len(member),
        member,
        len(value),
        value,
        len(last),
        last,
    )


def _packed(*parts: Any) -> bytes:
    """A command as Redis's protocol sends it: an array of bulk strings (``str`` and numbers
    as their text in UTF-8, as redis-py sends them)."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        if not isinstance(part, bytes):
            part = str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)
