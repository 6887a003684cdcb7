"""The operator deployable."""
