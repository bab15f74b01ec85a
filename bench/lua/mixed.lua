local c = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
setup = c.setup
init = c.init
done = c.done

-- 80 % reads (inbox, conversation, sync, user in equal parts), 20 % sends.
request = function()
  local i, j = c.pair()
  local r = math.random()
  if r < 0.2 then return c.send_request(i, j)
  elseif r < 0.4 then return c.inbox_request(i)
  elseif r < 0.6 then return c.conversation_request(i)
  elseif r < 0.8 then return c.sync_request(i)
  end
  return c.user_request(i, j)
end
