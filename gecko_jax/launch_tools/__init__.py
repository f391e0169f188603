"""Helpers of the launch scripts that need no JAX: Cloud TPU commands and sweeps."""
