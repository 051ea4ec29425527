"""The API tier: routes, schemas, the error shape, the solve service (parse, cache, coalesce, submit, render),
MCP and tool schemas, middleware (auth, CORS, limits, request ids, idempotency) and the playground."""
