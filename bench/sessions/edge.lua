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
-- done() prints one machine-readable line:
--   WRK_RESULT requests=N duration_us=D rps=R p50_us=A p90_us=B p99_us=C max_us=M
--              non2xx=S connect_err=.. read_err=.. write_err=.. timeouts=..

local next_tid = 0

function setup(thread)
   thread:set("tid", next_tid)
   next_tid = next_tid + 1
end

local mode, ids, counter, pool, auth

function init(args)
   mode = args[1] or "plain"
   ids = {}
   if args[2] then
      for line in io.lines(args[2]) do
         if #line > 0 then table.insert(ids, line) end
      end
   end
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

function done(summary, latency, requests)
   local e = summary.errors
   local secs = summary.duration / 1e6
   io.write(string.format(
      "WRK_RESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d non2xx=%d connect_err=%d read_err=%d write_err=%d timeouts=%d\n",
      summary.requests, summary.duration, summary.requests / secs,
      math.floor(latency:percentile(50)), math.floor(latency:percentile(90)),
      math.floor(latency:percentile(99)), math.floor(latency.max),
      e.status, e.connect, e.read, e.write, e.timeout))
end
