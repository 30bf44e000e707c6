"""Adapters: the ports over real clients (``confluent`` needs the ``kafka`` extra)."""
