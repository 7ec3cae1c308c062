"""The streams tests' receiver: a real HTTP server in the test process."""

from ..streams.conftest import receiver  # noqa: F401 - a fixture
