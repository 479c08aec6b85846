"""The HTTP service: ``structsent serve``.

``settings`` the server's settings (resolved once), ``service`` the model behind the routes (loaded
in the background; limits, tokenizing, a client's leaving), ``batcher`` merges concurrent requests
into token-budgeted batches (no web framework in it), ``tei`` the semantics of TEI's ``/predict``,
``statuses`` maps typed errors to HTTP statuses, ``app`` holds the routes and the error answers,
``middleware`` the pure ASGI layers (timing, auth, body limits), ``connections`` uvicorn's HTTP
protocol with a connection cap and a header deadline, ``page`` the browser page at ``GET /``, ``logs``
the log rate limit, ``schemas`` the wire formats, ``metrics`` the Prometheus metrics; the flags live
in ``structsent.cli.serve``. fastapi, uvicorn and prometheus_client (``pip install
'structsent[server]'``) are imported by ``app``, ``middleware``, ``connections``, ``page`` and
``metrics`` (and the modules that import them) only.
"""
