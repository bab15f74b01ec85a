local c = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
setup = c.setup
init = c.init
done = c.done

-- GET /api/v1/users/?user_id= of a random user.
request = function()
  return c.user_request(c.pair())
end
