-- wrk script: GET the usage of a random customer out of `customers` (ids c0000000..).
-- Usage: wrk -s usage.lua URL -- <customers> <api key>
local customers, key

function init(args)
  customers = tonumber(args[1])
  key = args[2]
  wrk.headers["Authorization"] = "Bearer " .. key
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
end

function request()
  local path = string.format("/v1/customers/c%07d/usage", math.random(0, customers - 1))
  return wrk.format("GET", path)
end

function done(summary, latency, requests)
  io.write(string.format(
    'RESULT {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"errors":%d,"non2xx":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
