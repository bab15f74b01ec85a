local c = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
setup = c.setup
done = c.done

-- POST /api/v1/conversations/{partner}/read, moving a read mark forward on every call.
-- Each thread takes its share of the users and goes round their conversations in turn;
-- a conversation's up_to_id goes up by one at each visit (from read_start), so the mark
-- moves every time while it stays below the conversation's latest message id (the ids of
-- the whole database interleave, so that is thousands of visits away). Round-robin keeps
-- a conversation's calls thousands of requests apart: they cannot overtake each other.
local pairs_, marks, turn = {}, {}, 0
init = function(args)
  c.init(args)
  local d = c.data
  local threads = d.threads or 1
  for i = 1, #d.ids do
    if (i - 1) % threads == ((tid or 1) - 1) % threads then
      for _, partner in ipairs(d.partners[i]) do
        pairs_[#pairs_ + 1] = { i, partner }
      end
    end
  end
end

request = function()
  turn = turn % #pairs_ + 1
  local i, partner = pairs_[turn][1], pairs_[turn][2]
  marks[turn] = (marks[turn] or (c.data.read_start or 1) - 1) + 1
  local body = '{"up_to_id":' .. marks[turn] .. '}'
  return wrk.format("POST", "/api/v1/conversations/" .. partner .. "/read", c.headers[i], body)
end
