local c = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
setup = c.setup
init = c.init
done = c.done

-- POST /api/v1/auth/token/ for a random user (argon2 verification per request).
local json_headers = {["Content-Type"] = "application/json"}
request = function()
  local i = math.random(#c.data.usernames)
  local body = '{"username":"' .. c.data.usernames[i] .. '","password":"' .. c.data.password .. '"}'
  return wrk.format("POST", "/api/v1/auth/token/", json_headers, body)
end
