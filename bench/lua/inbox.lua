local c = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
setup = c.setup
init = c.init
done = c.done

-- GET /api/v1/chats/ page 1 as a random user.
request = function()
  return c.inbox_request(math.random(#c.data.ids))
end
