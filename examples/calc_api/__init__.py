"""The calc API: a Starlette service protected by ``RequireRole("invokeRole")``, and its client."""
