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
-- setup() and done() (the WRK_RESULT line) are bench/wrk_common.lua's.

dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "../wrk_common.lua")

local mode, cookies, n_cookies, counter, offset

function init(args)
   mode = args[1] or "plain"
   cookies = read_lines(args[2])
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
