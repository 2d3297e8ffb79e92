-- wrk script of bench_webhook.py: sends pre-signed requests from a file of
-- records "<length>\n<raw HTTP request>", in order, over wrk's keep-alive
-- connections.
--   wrk ... -s bench/webhook.lua URL -- FILE [DELAY_MS]
-- DELAY_MS paces each connection (one request per DELAY_MS), for latency
-- at a given rate rather than at saturation.
-- Past the end it starts again: the repeats are duplicate deliveries unless
-- the daemon has forgotten them. done() prints one line for the caller.

local reqs, n, next, pace = {}, 0, 0, 0

function init(args)
  pace = tonumber(args[2] or "0") or 0
  local f = assert(io.open(args[1], "rb"))
  local data = f:read("*a")
  f:close()
  local pos = 1
  while pos <= #data do
    local nl = data:find("\n", pos, true)
    if not nl then break end
    local len = tonumber(data:sub(pos, nl - 1))
    n = n + 1
    reqs[n] = data:sub(nl + 1, nl + len)
    pos = nl + 1 + len
  end
end

function delay()
  return pace
end

function request()
  next = next % n + 1
  return reqs[next]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "result requests=%d duration_us=%d status_errors=%d socket_errors=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, e.status,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
