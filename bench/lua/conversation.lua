local c = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
setup = c.setup
init = c.init
done = c.done

-- GET /api/v1/chats/?with= a partner the user has exchanged messages with.
request = function()
  return c.conversation_request(math.random(#c.data.ids))
end
