"""The Lua scripts that judge webhook transitions cluster-wide, atomically.

Occupancy: ``P whc:{app}:{channel}`` holds each node's absolute subscription count (written
by that node's Reporter, so a repeated write is harmless) and ``P whr:{app}:{channel}`` the
last state *reported*. Whoever makes the total go above zero while the reported state is
vacated reports channel_occupied (``SET NX``: exactly one caller can win). A total of zero
while reported occupied records a due vacate in ``P wh:due``; when it comes due the
scheduler's script reports channel_vacated only if the total is still zero and the reported
state is still occupied. A reload within the debounce cancels the pending vacate and, the
reported state being still occupied, reports nothing at all.

Presence works the same way per user id with ``P whm:{app}:{channel}`` (members reported)
and ``P pm:{app}:{channel}`` (the presence members, gateway/state/presence.py) as the truth
checked when a removal comes due.

Every script that reports appends ``a`` (app), ``n`` (event name), ``c`` (channel) and ``e``
(the event's JSON) to the stream ``P wh:events``.
"""

from __future__ import annotations

# Stream cap: entries are deleted as soon as they are batched, this only bounds a backlog
# while no webhooks worker runs.
STREAM_MAXLEN = 1_000_000

_XADD = "redis.call('XADD', {stream}, 'MAXLEN', '~', {maxlen}, '*', 'a', {app}, 'n', {name}, " \
        "'c', {channel}, 'e', {event})"

_SUM = """
local total = 0
for _, v in ipairs(redis.call('HVALS', {key})) do total = total + tonumber(v) end
"""

_SUBSCRIPTIONS = """
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local new = tonumber(ARGV[2])
if new < 0 then new = 0 end
if new == 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  {forget}
else
  redis.call('HSET', KEYS[1], ARGV[1], new)
  {remember}
end
""" + _SUM.format(key="KEYS[1]") + """
if ARGV[10] == '1' then
  if total > 0 then
    redis.call('ZREM', KEYS[4], ARGV[5])
    if redis.call('SET', KEYS[3], '1', 'NX') and ARGV[9] ~= '' then
      """ + _XADD.format(stream="KEYS[5]", maxlen="ARGV[13]", app="ARGV[7]",
                         name="'channel_occupied'", channel="ARGV[8]", event="ARGV[9]") + """
    end
  elseif redis.call('EXISTS', KEYS[3]) == 1 then
    redis.call('ZADD', KEYS[4], 'NX', ARGV[4], ARGV[5])
  end
end
if ARGV[11] ~= '' and new ~= cur then
  redis.call('ZADD', KEYS[4], 'NX', ARGV[12], ARGV[11])
end
return total
"""

# KEYS: counts, node channels, reported, due, stream, nodes
# ARGV: node, count, now_ms, vacate_due_ms, vacate_member, row, app, channel,
#       occupied_json ('' = not wanted), track_occupancy ('1'/'0'), count_member ('' = none),
#       count_due_ms, maxlen
# Returns the cluster-wide total.
SUBSCRIPTIONS = _SUBSCRIPTIONS.replace(
    "{forget}", "redis.call('SREM', KEYS[2], ARGV[6])").replace(
    "{remember}", "redis.call('SADD', KEYS[2], ARGV[6])\n"
                  "  redis.call('HSETNX', KEYS[6], ARGV[1], ARGV[3])")

# The same on Redis Cluster, where the node's keys (``P whn:{node}``, ``P wh:nodes``) are in
# another slot than the app's: KEYS[2] and KEYS[6] are the counts key again (never touched),
# the caller records the node's channel before a count above zero and forgets it after a
# zero (reporter.NodeChannels), so a node's count is never written without its record.
SUBSCRIPTIONS_APP = _SUBSCRIPTIONS.replace("{forget}", "").replace("{remember}", "")

# KEYS: due, counts, reported, stream.  ARGV: member, now_ms, vacated_json, app, channel, maxlen
DUE_VACATE = """
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not s or tonumber(s) > tonumber(ARGV[2]) then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
""" + _SUM.format(key="KEYS[2]") + """
if total > 0 then return 0 end
if redis.call('DEL', KEYS[3]) == 0 then return 0 end
if ARGV[3] ~= '' then
  """ + _XADD.format(stream="KEYS[4]", maxlen="ARGV[6]", app="ARGV[4]",
                     name="'channel_vacated'", channel="ARGV[5]", event="ARGV[3]") + """
end
return 1
"""

# KEYS: members reported, due, stream.  ARGV: user, member, added_json, app, channel, maxlen
MEMBER_ADDED = """
redis.call('ZREM', KEYS[2], ARGV[2])
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return 0 end
if ARGV[3] ~= '' then
  """ + _XADD.format(stream="KEYS[3]", maxlen="ARGV[6]", app="ARGV[4]",
                     name="'member_added'", channel="ARGV[5]", event="ARGV[3]") + """
end
return 1
"""

# KEYS: members reported, due.  ARGV: user, member, due_ms
MEMBER_REMOVED = """
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], 'NX', ARGV[3], ARGV[2])
return 1
"""

# KEYS: due, members reported, presence members, stream.
# ARGV: member, now_ms, user, removed_json, app, channel, maxlen
DUE_MEMBER = """
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not s or tonumber(s) > tonumber(ARGV[2]) then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
if redis.call('HEXISTS', KEYS[3], ARGV[3]) == 1 then return 0 end
if redis.call('SREM', KEYS[2], ARGV[3]) == 0 then return 0 end
if ARGV[4] ~= '' then
  """ + _XADD.format(stream="KEYS[4]", maxlen="ARGV[7]", app="ARGV[5]",
                     name="'member_removed'", channel="ARGV[6]", event="ARGV[4]") + """
end
return 1
"""

# KEYS: due, counts, last count reported, stream.
# ARGV: member, now_ms, json_prefix ('' = not wanted), app, channel, maxlen
DUE_COUNT = """
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not s or tonumber(s) > tonumber(ARGV[2]) then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
""" + _SUM.format(key="KEYS[2]") + """
local last = redis.call('GET', KEYS[3])
if (last and tonumber(last) == total) or (not last and total == 0) then return 0 end
redis.call('SET', KEYS[3], total, 'EX', 86400)
if ARGV[3] ~= '' then
  local ev = ARGV[3] .. total .. '}'
  """ + _XADD.format(stream="KEYS[4]", maxlen="ARGV[6]", app="ARGV[4]",
                     name="'subscription_count'", channel="ARGV[5]", event="ev") + """
end
return 1
"""

# Appends one event unconditionally (client_event, cache_miss).
# KEYS: stream.  ARGV: app, name, channel, json, maxlen
APPEND = "return " + _XADD.format(stream="KEYS[1]", maxlen="ARGV[5]", app="ARGV[1]",
                                  name="ARGV[2]", channel="ARGV[3]", event="ARGV[4]")

# The leader's commit: make delivery records and acknowledge + delete the stream entries they
# came from, all or nothing. Refused (0) when any entry is no longer pending for this
# consumer (another leader took it over): nothing is written and the caller drops its batch.
# KEYS: stream, retry zset, then per delivery: record, status index.
# ARGV: group, consumer, n_entries, entry ids..., then per delivery:
#       id, created_ms, retry_score ('' = none), ttl_s ('' = none), n_fields, field, value...
COMMIT = """
local group, consumer = ARGV[1], ARGV[2]
local n = tonumber(ARGV[3])
for i = 1, n do
  local id = ARGV[3 + i]
  if #redis.call('XPENDING', KEYS[1], group, id, id, 1, consumer) == 0 then return 0 end
end
local pos = 4 + n
local k = 3
while pos <= #ARGV do
  local did, created, score, ttl = ARGV[pos], ARGV[pos + 1], ARGV[pos + 2], ARGV[pos + 3]
  local nf = tonumber(ARGV[pos + 4])
  local fields = {}
  for j = 1, nf do fields[j] = ARGV[pos + 4 + j] end
  redis.call('HSET', KEYS[k], unpack(fields))
  redis.call('ZADD', KEYS[k + 1], created, did)
  if score ~= '' then redis.call('ZADD', KEYS[2], score, did) end
  if ttl ~= '' then redis.call('EXPIRE', KEYS[k], ttl) end
  pos = pos + 5 + nf
  k = k + 2
end
for i = 1, n do
  redis.call('XACK', KEYS[1], group, ARGV[3 + i])
  redis.call('XDEL', KEYS[1], ARGV[3 + i])
end
return 1
"""

# A status change of a delivery, only if its status is still the expected one.
# KEYS: record, index of the old status, index of the new status, retry zset.
# ARGV: expected, new, id, created_ms, retry_score ('' = remove from retry), ttl_s ('' = keep
#       forever), field, value...
TRANSITION = """
if redis.call('HGET', KEYS[1], 'status') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2])
if #ARGV > 6 then
  local fields = {}
  for j = 7, #ARGV do fields[j - 6] = ARGV[j] end
  redis.call('HSET', KEYS[1], unpack(fields))
end
if KEYS[2] ~= KEYS[3] then
  redis.call('ZREM', KEYS[2], ARGV[3])
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
end
if ARGV[5] == '' then
  redis.call('ZREM', KEYS[4], ARGV[3])
else
  redis.call('ZADD', KEYS[4], ARGV[5], ARGV[3])
end
if ARGV[6] == '' then
  redis.call('PERSIST', KEYS[1])
else
  redis.call('EXPIRE', KEYS[1], ARGV[6])
end
return 1
"""

# Due deliveries, each leased (rescheduled ``lease`` ms later) as it is taken, so a
# delivery whose task is lost is taken again after the lease.
# KEYS: retry zset.  ARGV: now_ms, lease_until_ms, limit
TAKE_DUE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], ARGV[2], id) end
return ids
"""

# Release a lock only if we still hold it.  KEYS: lock.  ARGV: token
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Take or renew a lock held by ``token``.  KEYS: lock.  ARGV: token, ttl_ms
LEAD = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if cur then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 2
"""

# Redis Cluster: the apps whose queues the leader should look at by now, taken (removed) at
# once; a hint written again meanwhile stays for the next call.
# KEYS: wake zset.  ARGV: now_ms, limit
TAKE_WAKE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
if #ids > 0 then redis.call('ZREM', KEYS[1], unpack(ids)) end
return ids
"""
