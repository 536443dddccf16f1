-- Web-channel turns for wrk: each request is a new message (a unique id) of one of many users.
--
--   wrk -t1 -c16 -d10s --latency -s bench/wrk/turns.lua http://127.0.0.1:PORT/v1/demo/web/messages \
--       -- RUN USERS TEXT
--
-- RUN    a tag unique to this wrk run: ids are "<RUN>-t<thread>-<n>", so no run repeats one
--        (a repeated (user, id) pair is a duplicate, which costs the server less than a turn)
-- USERS  users per thread, "t<thread>-u<i>", visited in turn: user i gets every USERS-th message,
--        so the same users (conversations) come back in every run that gives the same USERS
-- TEXT   the message text ("about" at the registration flow's main menu: a text, the menu again)
--
-- done() prints one line "WRK-RESULT {json}" with the counts and the latency percentiles (µs);
-- a response that is not 2xx, or a 2xx that says "duplicate": true, is counted.

local threads = {}
local next_id = 1

function setup(thread)
   thread:set("tid", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

function init(args)
   run = args[1] or "r"
   users = tonumber(args[2] or "1000")
   text = args[3] or "about"
   sent, responses, non2xx, duplicates = 0, 0, 0, 0
   statuses = {}
   prefix = run .. "-t" .. tid .. "-"
   user_prefix = "t" .. tid .. "-u"
   headers = {["Content-Type"] = "application/json"}
end

function request()
   local n = sent
   sent = sent + 1
   local body = string.format('{"user":"%s%d","id":"%s%d","text":"%s"}',
                              user_prefix, n % users, prefix, n, text)
   return wrk.format("POST", nil, headers, body)
end

function response(status, headers, body)
   responses = responses + 1
   if status < 200 or status > 299 then
      non2xx = non2xx + 1
      statuses[status] = (statuses[status] or 0) + 1
   elseif string.find(body, '"duplicate": true', 1, true) then
      duplicates = duplicates + 1
   end
end

function done(summary, latency, requests)
   local sum = {sent = 0, responses = 0, non2xx = 0, duplicates = 0}
   local by_status = {}
   for _, thread in ipairs(threads) do
      for name, _ in pairs(sum) do
         sum[name] = sum[name] + thread:get(name)
      end
      for status, count in pairs(thread:get("statuses")) do
         by_status[#by_status + 1] = string.format('"%d": %d', status, count)
      end
   end
   local e = summary.errors
   io.write(string.format(
      'WRK-RESULT {"requests": %d, "duration_us": %d, "bytes": %d, "sent": %d, "responses": %d, ' ..
      '"non2xx": %d, "duplicates": %d, "statuses": {%s}, ' ..
      '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
      '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "p999": %d, "max": %d, "mean": %.1f, "stdev": %.1f}}\n',
      summary.requests, summary.duration, summary.bytes, sum.sent, sum.responses,
      sum.non2xx, sum.duplicates, table.concat(by_status, ", "),
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
      latency.max, latency.mean, latency.stdev))
end
