-- Shared helpers for the wrk scripts. Loaded with dofile() in every wrk Lua state
-- (the main state runs setup/done, each thread state runs init/request).
local M = {}

local data_file = os.getenv("BENCH_DATA")
M.data = data_file and dofile(data_file) or {}

local next_id = 0
function M.setup(thread)
  next_id = next_id + 1
  thread:set("tid", next_id)
end

function M.init(args)
  math.randomseed(os.time() * 1000 + (tid or 0) * 7919)
  local d = M.data
  M.headers = {}
  for i, token in ipairs(d.tokens or {}) do
    M.headers[i] = {
      ["Authorization"] = "Bearer " .. token,
      ["Content-Type"] = "application/json",
    }
  end
end

-- A random user index, and a second one different from the first.
function M.pair()
  local n = #M.data.ids
  local i = math.random(n)
  local j = math.random(n - 1)
  if j >= i then j = j + 1 end
  return i, j
end

local seq = 0
function M.send_request(i, j)
  seq = seq + 1
  local body = '{"user_id":' .. M.data.ids[j] .. ',"message":"bench message ' .. (tid or 0)
    .. '-' .. seq .. '"}'
  return wrk.format("POST", "/api/v1/chats/", M.headers[i], body)
end

function M.inbox_request(i)
  return wrk.format("GET", "/api/v1/chats/?page=1&page_size=10", M.headers[i])
end

function M.conversation_request(i)
  local partners = M.data.partners[i]
  local other = partners[math.random(#partners)]
  local size = M.data.conversation_page_size or 10
  return wrk.format("GET", "/api/v1/chats/?with=" .. other .. "&page=1&page_size=" .. size,
    M.headers[i])
end

function M.sync_request(i)
  return wrk.format("GET", "/api/v1/chats/?after_id=" .. M.data.after[i] .. "&page_size=10",
    M.headers[i])
end

function M.user_request(i, j)
  return wrk.format("GET", "/api/v1/users/?user_id=" .. M.data.ids[j], M.headers[i])
end

-- Machine-readable summary on one line, picked up by bench/wrk.py.
function M.done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,'
      .. '"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,'
      .. '"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean))
end

return M
