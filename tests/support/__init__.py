"""Code shared by the test modules: subprocess workers and services, Kafka helpers,
stream generators, private servers, test models and the page's checks.

Test modules import from here, never from one another.
"""
