"""Internals of the certbot plugin; the entry point is the only public name."""
