-- wrk script for bench/sessions/edge.
--
--   wrk -s edge.lua URL -- MODE [IDS_FILE [API_KEY [THREADS]]]
--
-- MODE: plain   GET /  without a cookie (the trivial auth backend ignores it)
--       edge    GET /  with `Cookie: sessiond_session=<id>`, ids round-robin over IDS_FILE
--       rotate  POST /v1/sessions/<id>/rotate: each answer's new id is rotated next, so the
--               pool of live ids never shrinks (each thread starts with its own share of
--               IDS_FILE, at least one id per connection)
--
-- setup() and done() (the WRK_RESULT line) are bench/wrk_common.lua's.

dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "../wrk_common.lua")

local mode, ids, counter, pool, auth

function init(args)
   mode = args[1] or "plain"
   ids = read_lines(args[2])
   if mode ~= "plain" and #ids == 0 then
      error("no ids in " .. tostring(args[2]))
   end
   counter = 0
   auth = {}
   if args[3] then auth["Authorization"] = "Bearer " .. args[3] end
   -- Rotation: thread t of T (THREADS, wrk's -t) owns the ids t, t + T, t + 2T, ..., so no
   -- two threads rotate the same session.
   local threads = tonumber(args[4] or "1")
   pool = {}
   for i = tid + 1, #ids, threads do table.insert(pool, ids[i]) end
end

function request()
   counter = counter + 1
   if mode == "plain" then
      return wrk.format("GET", "/", {}, nil)
   elseif mode == "edge" then
      local id = ids[((counter * 7919 + tid) % #ids) + 1]
      return wrk.format("GET", "/", { ["Cookie"] = "sessiond_session=" .. id }, nil)
   elseif mode == "rotate" then
      local id = table.remove(pool, 1) or ids[1]
      return wrk.format("POST", "/v1/sessions/" .. id .. "/rotate", auth, nil)
   else
      error("unknown mode " .. tostring(mode))
   end
end

function response(status, headers, body)
   if mode == "rotate" and status == 200 then
      local id = string.match(body, '"id":"([^"]+)"')
      if id then table.insert(pool, id) end
   end
end
