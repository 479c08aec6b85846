"""The HTTP service: ``structsent serve``.

``batcher`` merges concurrent requests into token-budgeted batches (no web framework in it),
``app`` holds the routes and maps typed errors to HTTP statuses, ``middleware`` the pure ASGI
layers (timing, auth, body limits), ``connections`` uvicorn's HTTP protocol with a connection cap
and a header deadline, ``page`` the browser page at ``GET /``, ``logs`` the log rate limit,
``schemas`` the wire formats, ``metrics`` the Prometheus metrics; the flags live in ``structsent.cli.serve``. fastapi, uvicorn and
prometheus_client (``pip install 'structsent[server]'``) are imported by ``app``, ``middleware``,
``connections``, ``page`` and ``metrics`` only.
"""
