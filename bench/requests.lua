-- wrk script for bench/run.py: a distinct email address per request, and a machine-readable summary.
--
-- Arguments (after `--` on the wrk command line):
--   hello    <path>
--   v3write  <path> <token> <subscription id> <address prefix>        POST {emailAddress, subscriptionId}
--   v4write  <path prefix> <token> <subscription id> <address prefix>  POST <path prefix><address>
--   status   <path prefix> <token> <address prefix> <addresses per thread, comma-separated> [<query>]
--
-- Addresses are "<prefix>-t<thread>-<n>@example.com", n counting from 1 in each thread. wrk builds one
-- request per thread before the load starts and never sends it: request n = 1 of each thread. So a
-- `status` run given the per-thread counts of an earlier write run reads back exactly the addresses
-- that run wrote, 2 to <count>, cycling through them; with counts of 0 it reads addresses never seen.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end

local mode, path, token, subscription, prefix
local query = ""
local cycle = 0
n = 0

local function split_commas(text)
  local out = {}
  for item in string.gmatch(text or "", "[^,]+") do
    table.insert(out, tonumber(item))
  end
  return out
end

function init(args)
  mode = args[1]
  if mode == "hello" then
    path = args[2]
  elseif mode == "v3write" or mode == "v4write" then
    path, token, subscription, prefix = args[2], args[3], args[4], args[5]
  elseif mode == "status" then
    path, token, prefix = args[2], args[3], args[4]
    cycle = split_commas(args[5])[id] or 0
    query = args[6] or ""
  else
    error("unknown mode " .. tostring(mode))
  end
end

local function address(k)
  return string.format("%s-t%d-%d@example.com", prefix, id, k)
end

function request()
  n = n + 1
  if mode == "hello" then
    return wrk.format("GET", path)
  end
  local headers = { ["Authorization"] = "Bearer " .. token }
  if mode == "v3write" then
    headers["Content-Type"] = "application/json"
    local body = string.format('{"emailAddress":"%s","subscriptionId":"%s"}', address(n), subscription)
    return wrk.format("POST", path, headers, body)
  end
  if mode == "v4write" then
    headers["Content-Type"] = "application/json"
    local body = string.format(
      '{"channel":"EMAIL","statusState":"SUBSCRIBED","subscriptionId":%s}', subscription)
    return wrk.format("POST", path .. address(n), headers, body)
  end
  local k = n
  if cycle > 1 then
    k = (n - 1) % (cycle - 1) + 2
  end
  return wrk.format("GET", path .. address(k) .. query, headers)
end

function done(summary, latency, requests)
  local sent = {}
  for i, thread in ipairs(threads) do
    sent[i] = tostring(thread:get("n"))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f},"sent_per_thread":[%s]}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
    table.concat(sent, ",")))
end
