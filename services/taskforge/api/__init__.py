"""The api deployable."""
