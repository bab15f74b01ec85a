local c = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
setup = c.setup
init = c.init
done = c.done

-- Ceilings and fixed URLs: the request is the URL wrk was given (plus an optional token).
local req
request = function()
  if not req then
    local path = c.data.path or wrk.path
    local headers = c.headers[1] or {}
    req = wrk.format("GET", path, headers)
  end
  return req
end
