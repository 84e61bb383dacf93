"""The process: the Litestar app, its ASGI entry, worker processes, shutdown, request limits and policy reload."""
