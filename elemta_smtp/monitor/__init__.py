"""What an admin's monitoring reads from the running daemon: the ``[metrics]`` listener
with ``GET /metrics`` (Prometheus text format, from ``elemta_smtp.metrics`` and the
scrape-time gauges of collector.py) and ``GET /healthz`` (health.py decides)."""
