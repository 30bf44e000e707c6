"""Shared test configuration: hypothesis profiles and the real-Kafka fixture.

``HYPOTHESIS_PROFILE`` picks a profile: ``ci`` (default; derandomized, sized to
keep the suite within minutes) or ``nightly`` (long, random).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=100,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "nightly",
    max_examples=5000,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", max_examples=30, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# The real-Kafka broker fixture (`kafka_bootstrap`): env, a running local broker,
# a broker this project starts, testcontainers, or skip (fail in CI).
pytest_plugins = ["tests.kafka_broker"]
