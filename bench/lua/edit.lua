local c = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
setup = c.setup
init = c.init
done = c.done

-- PATCH /api/v1/chats/{id}/: a random user edits one of the messages they sent.
local seq = 0
request = function()
  local i = math.random(#c.data.ids)
  local own = c.data.sent[i]
  seq = seq + 1
  local body = '{"message":"edited ' .. (tid or 0) .. '-' .. seq .. '"}'
  return wrk.format("PATCH", "/api/v1/chats/" .. own[math.random(#own)] .. "/", c.headers[i], body)
end
