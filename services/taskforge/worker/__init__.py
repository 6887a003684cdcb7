"""The worker deployable."""
