"""The Redis backend, for several machines sharing one store: ``redis://host:port/db``
through the ``redis`` package's asyncio client. Each commit is one Lua script, so Redis runs
its checks and writes with nothing in between; reads are one command or one script.

Layout, under ``valor:``: ``valor:version`` (the store's version counter),
``valor:{namespace}:k`` (a sorted set of the namespace's keys, for listing in order) and
``valor:{namespace}:e:{key}`` (a hash: ``v`` the encoded value, ``ver``, ``exp``). An entry
with an expiry also gets Redis's own (``PEXPIREAT``), which removes it in time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .backend import Check, Commit, Mutation, Record
from .errors import NotAnInteger, StoreFull, StoreUnavailable
from .limits import MAX_SAFE_INTEGER
from .sqlite import prefix_end
from .urls import redacted

ROOT = "valor"
SOCKET_TIMEOUT = 5.0
"""Seconds a command may take before the store counts as unavailable (503)."""

# Entries that expired by the caller's clock count as absent, as in every backend.
_LIVE = """
local function live(k, now)
  local r = redis.call('HMGET', k, 'v', 'ver', 'exp')
  if not r[1] then return nil end
  if r[3] and r[3] ~= '' and tonumber(r[3]) <= now then return nil end
  return r
end
"""

_COMMIT = (
    _LIVE
    + """
-- KEYS: version counter, key set, entry keys...; ARGV: now, #checks, (entry, version)...,
-- #mutations, (kind, entry, member, value, expires_at, by)...
local now = tonumber(ARGV[1])
local i = 3
for _ = 1, tonumber(ARGV[2]) do
  local r = live(KEYS[tonumber(ARGV[i])], now)
  local have = r and r[2] or ''
  if have ~= ARGV[i + 1] then return {0} end
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
      before = r and {r[1], r[3] or ''} or {false, ''}
    end
    local current = 0
    if before[1] then
      local digits = string.match(before[1], '^j(%-?%d+)$')
      if not digits then return redis.error_reply('VALOR_NOT_AN_INTEGER ' .. member) end
      current = tonumber(digits)
    end
    local total = current + tonumber(ARGV[i + 5])
    if math.abs(total) > MAX_SAFE then
      return redis.error_reply('VALOR_OUT_OF_RANGE ' .. member)
    end
    table.insert(sums, string.format('%.0f', total))
    pending[k] = {'j' .. string.format('%.0f', total), before[2], member}
  end
  i = i + 6
end
if #order == 0 then return {1} end
local version = redis.call('INCR', KEYS[1])
for _, k in ipairs(order) do
  local entry = pending[k]
  if entry[1] then
    redis.call('HSET', k, 'v', entry[1], 'ver', version, 'exp', entry[2])
    redis.call('ZADD', KEYS[2], 0, entry[3])
    if entry[2] ~= '' then
      redis.call('PEXPIREAT', k, math.ceil(tonumber(entry[2]) * 1000))
    else
      redis.call('PERSIST', k)
    end
  else
    redis.call('DEL', k)
    redis.call('ZREM', KEYS[2], entry[3])
  end
end
return {1, version, unpack(sums)}
""".replace("MAX_SAFE", str(MAX_SAFE_INTEGER))
)

_LIST = (
    _LIVE
    + """
-- KEYS: key set; ARGV: now, min, max, limit, entry key prefix
local now, limit = tonumber(ARGV[1]), tonumber(ARGV[4])
local found, start = {}, ARGV[2]
while #found < limit * 4 do
  local members = redis.call('ZRANGEBYLEX', KEYS[1], start, ARGV[3], 'LIMIT', 0, limit)
  if #members == 0 then break end
  for _, member in ipairs(members) do
    local k = ARGV[5] .. member
    local r = live(k, now)
    if r then
      table.insert(found, member)
      table.insert(found, r[1])
      table.insert(found, r[2])
      table.insert(found, r[3] or '')
      if #found >= limit * 4 then break end
    elseif redis.call('EXISTS', k) == 0 then
      redis.call('ZREM', KEYS[1], member)  -- Redis expired it: drop its name too
    end
  end
  start = '(' .. members[#members]
end
return found
"""
)


class RedisBackend:
    """Entries in a Redis server (7.0 or later), shared by every process that names it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.description = redacted(url)
        self._client: Any = None
        self._commit: Any = None
        self._list: Any = None

    def _connected(self) -> Any:
        if self._client is None:
            import redis.asyncio

            self._client = redis.asyncio.from_url(
                self.url,
                socket_timeout=SOCKET_TIMEOUT,
                socket_connect_timeout=SOCKET_TIMEOUT,
            )
            self._commit = self._client.register_script(_COMMIT)
            self._list = self._client.register_script(_LIST)
        return self._client

    async def get(self, namespace: str, key: str, now: float) -> Record | None:
        client = self._connected()
        async with self._errors():
            value, version, expires = await client.hmget(_entry(namespace, key), "v", "ver", "exp")
        if value is None or (expires and float(expires) <= now):
            return None
        return Record(key, value, int(version), float(expires) if expires else None)

    async def list(
        self, namespace: str, prefix: str, start_after: str | None, limit: int, now: float
    ) -> list[Record]:
        self._connected()
        if start_after is not None and start_after >= prefix:
            low = b"(" + start_after.encode()
        else:
            low = b"[" + prefix.encode()
        end = prefix_end(prefix)
        high = b"(" + end.encode() if end is not None else b"+"
        keys = [_key_set(namespace)]
        args = [repr(now), low, high, limit, _entry(namespace, "")]
        async with self._errors():
            flat = await self._list(keys=keys, args=args)
        return [
            Record(
                flat[i].decode(),
                flat[i + 1],
                int(flat[i + 2]),
                float(flat[i + 3]) if flat[i + 3] else None,
            )
            for i in range(0, len(flat), 4)
        ]

    async def commit(
        self, namespace: str, checks: Sequence[Check], mutations: Sequence[Mutation], now: float
    ) -> Commit:
        self._connected()
        keys: list[str] = [f"{ROOT}:version", _key_set(namespace)]
        index: dict[str, int] = {}

        def entry(key: str) -> int:
            if key not in index:
                keys.append(_entry(namespace, key))
                index[key] = len(keys)  # Lua counts from 1
            return index[key]

        args: list[Any] = [repr(now), len(checks)]
        for check in checks:
            args += [entry(check.key), "" if check.version is None else str(check.version)]
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
        async with self._errors():
            result = await self._commit(keys=keys, args=args)
        if not result[0]:
            return Commit(False)
        if len(result) == 1:
            return Commit(True)
        return Commit(True, int(result[1]), tuple(int(total) for total in result[2:]))

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _errors(self) -> _Translated:
        return _Translated(self.description)


class _Translated:
    """Redis's errors as the store's: unreachable -> StoreUnavailable, out of memory ->
    StoreFull, a script's refusal -> NotAnInteger."""

    def __init__(self, description: str) -> None:
        self.description = description

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, kind: Any, exc: BaseException | None, traceback: Any) -> None:
        if exc is None:
            return
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
            return  # anything else is a bug: raised as it is
        if isinstance(exc, (exceptions.ConnectionError, exceptions.TimeoutError, OSError)):
            raise StoreUnavailable(self.description, f"{type(exc).__name__}: {exc}") from exc
        if isinstance(exc, exceptions.RedisError):
            raise StoreUnavailable(self.description, f"{type(exc).__name__}: {exc}") from exc


def _key_set(namespace: str) -> str:
    return f"{ROOT}:{namespace}:k"


def _entry(namespace: str, key: str) -> str:
    return f"{ROOT}:{namespace}:e:{key}"
