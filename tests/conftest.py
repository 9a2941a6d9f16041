"""Settings shared by the whole suite.

Hypothesis's `too_slow` health check times how long the strategies take to generate data; on CI's
two shared cores (and with the end-to-end tests' processes running beside) that time says more about
the machine than about the strategy, and it failed a property test under one seed. The data checks
(`data_too_large`, `filter_too_much`) stay on: they find strategies that are wrong, not machines that
are busy. Deadlines are off for the same reason; no test here asserts on time.
"""

from hypothesis import HealthCheck, settings

settings.register_profile("infery", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("infery")
