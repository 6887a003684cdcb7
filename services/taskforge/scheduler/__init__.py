"""The scheduler deployable."""
