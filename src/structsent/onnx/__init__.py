"""The ONNX wing: export (``export``), agreement with the reference (``validate``), the cache (``cache``).

The graph is traced from the one classifier definition in ``structsent.modeling``; the ``structsent
export`` command is a thin layer over ``export.export_checkpoint`` in ``structsent.cli.export``.
"""
