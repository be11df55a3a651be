-- wrk script: POST batches of `batch` events with ids unique per run, thread and request.
-- Usage: wrk -s events.lua URL -- <batch> <api key> <run tag>
local counter = 0
local thread_id = 0
local batch, key, tag
local threads = {}

function setup(thread)
  thread:set("thread_id", #threads)
  table.insert(threads, thread)
end

function init(args)
  batch = tonumber(args[1])
  key = args[2]
  tag = args[3]
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. key
end

local function event(id, i)
  return '{"id":"' .. id .. '","customer":"cus_' .. (i % 997) ..
         '","meter":"api_calls","value":' .. (i % 7 + 1) .. '}'
end

function request()
  counter = counter + 1
  local base = tag .. "-" .. thread_id .. "-" .. counter
  local body
  if batch == 1 then
    body = event(base, counter)
  else
    local parts = {}
    for i = 1, batch do parts[i] = event(base .. "-" .. i, i) end
    body = "[" .. table.concat(parts, ",") .. "]"
  end
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  io.write(string.format(
    'RESULT {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"errors":%d,"non2xx":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
