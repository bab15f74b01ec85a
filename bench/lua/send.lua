local c = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
setup = c.setup
init = c.init
done = c.done

-- POST /api/v1/chats/ between a random pair of users.
request = function()
  return c.send_request(c.pair())
end
