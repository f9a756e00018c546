-- wrk script for bench/middleware/run.
--
--   wrk -s middleware.lua URL -- MODE [COOKIES_FILE]
--
-- MODE: plain      GET /  with no cookie (static page, trivial auth, and the first-visit path:
--                  every request is a new client)
--       returning  GET /  with a Cookie header of a known client, round-robin over COOKIES_FILE
--                  (one header per line, from first visits made before the run)
--       decide     POST /v1/middleware/decide, the same cookies in the JSON body
--       decide-new POST /v1/middleware/decide without a cookie (first visit)
-- Threads start at different offsets in the cookie list, so concurrent requests are spread
-- over clients (each client has its own lock and a per-second decision limit).
--
-- done() prints one machine-readable line:
--   WRK_RESULT requests=N duration_us=D rps=R p50_us=A p90_us=B p99_us=C max_us=M
--              non2xx=S connect_err=.. read_err=.. write_err=.. timeouts=..

local next_tid = 0

function setup(thread)
   thread:set("tid", next_tid)
   next_tid = next_tid + 1
end

local mode, cookies, n_cookies, counter, offset

function init(args)
   mode = args[1] or "plain"
   cookies = {}
   if args[2] then
      for line in io.lines(args[2]) do
         if #line > 0 then table.insert(cookies, line) end
      end
   end
   n_cookies = #cookies
   if (mode == "returning" or mode == "decide") and n_cookies == 0 then
      error("no cookies in " .. tostring(args[2]))
   end
   offset = (tid * 7919) % math.max(n_cookies, 1)
   counter = 0
end

local function next_cookie()
   counter = counter + 1
   return cookies[((offset + counter) % n_cookies) + 1]
end

local json = { ["Content-Type"] = "application/json" }
local agent = "Mozilla/5.0 (X11; Linux x86_64) bench/middleware"

local function decide_body(cookie)
   local c = cookie and string.format('"cookie":"%s",', cookie) or ""
   return string.format(
      '{%s"ip":"127.0.0.1","user_agent":"%s","accept_language":"en","url":"http://bench.local/","method":"GET"}',
      c, agent)
end

function request()
   if mode == "plain" then
      return wrk.format("GET", "/", { ["User-Agent"] = agent }, nil)
   elseif mode == "returning" then
      return wrk.format("GET", "/", { ["User-Agent"] = agent, ["Cookie"] = next_cookie() }, nil)
   elseif mode == "decide" then
      return wrk.format("POST", "/v1/middleware/decide", json, decide_body(next_cookie()))
   elseif mode == "decide-new" then
      return wrk.format("POST", "/v1/middleware/decide", json, decide_body(nil))
   else
      error("unknown mode " .. tostring(mode))
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
