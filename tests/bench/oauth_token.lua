-- wrk script: the client_credentials grant at an edge's token endpoint, with HTTP Basic client
-- authentication (arg: the Authorization header value).
local auth

function init(args)
  auth = args[1]
end

function request()
  return wrk.format("POST", nil, {
    ["Authorization"] = auth,
    ["Content-Type"] = "application/x-www-form-urlencoded",
  }, "grant_type=client_credentials")
end
