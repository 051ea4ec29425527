"""HTTP layer: routes, request/response schemas, the error shape."""
