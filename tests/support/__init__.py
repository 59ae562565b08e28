"""Test helpers shared by every area (sign-in through the real identity provider, ...)."""
