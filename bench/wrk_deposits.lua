-- An independent load run of POST /deposit with wrk (docs/performance.md, "An independent load run").
--
--   .venv/bin/penpay token --sub load --count 2000 --ttl 14400 > /tmp/tokens.txt
--   wrk -t1 -c64 -d10s -s bench/wrk_deposits.lua http://127.0.0.1:8000 -- /tmp/tokens.txt
--
-- Each request is a new deposit as the bench posts them: the users' tokens in turn (one a line in the file named
-- after `--`), a fresh Idempotency-Key, a phone number of its own (2547 and eight digits from 12000000 up, never the
-- sandbox's special numbers) and a CR login id of seven digits. At the end it prints the answers by status: every
-- one should be 202.

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  local path = args[1]
  if path == nil then
    error("name the tokens file after --: wrk ... -s bench/wrk_deposits.lua URL -- /tmp/tokens.txt")
  end
  tokens = {}
  for line in io.lines(path) do
    if line ~= "" then
      tokens[#tokens + 1] = line
    end
  end
  if #tokens == 0 then
    error("no tokens in " .. path)
  end
  sent = 0
  statuses = {}
  math.randomseed(os.time() * 1000 + id)
  run = string.format("%08x", math.random(0, 0x7fffffff))
end

function request()
  sent = sent + 1
  local n = id * 10000000 + sent -- unique across threads (fewer than 10 million requests a thread)
  local body = string.format(
    '{"amount_kes": 100, "msisdn": "2547%08d", "deriv_loginid": "CR%07d"}',
    12000000 + n % 80000000,
    1000000 + n % 1000
  )
  return wrk.format("POST", "/deposit", {
    ["Authorization"] = "Bearer " .. tokens[n % #tokens + 1],
    ["Idempotency-Key"] = run .. "-" .. id .. "-" .. sent,
    ["Content-Type"] = "application/json",
  }, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local by_status = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      by_status[status] = (by_status[status] or 0) + count
    end
  end
  local answers = {}
  for status, count in pairs(by_status) do
    answers[#answers + 1] = string.format("%s: %d", status, count)
  end
  table.sort(answers)
  io.write(string.format(
    "deposits posted/s %.1f; latency p50 %.1f ms, p99 %.1f ms; answers %s; socket errors %d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000,
    latency:percentile(99) / 1000,
    table.concat(answers, ", "),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  ))
end
