local c = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
setup = c.setup
init = c.init
done = c.done

-- GET /api/v1/chats/?after_id= near the end of the user's history.
request = function()
  return c.sync_request(math.random(#c.data.ids))
end
