"""elemta: a hardened SMTP server that looks after its own TLS certificates."""

__version__ = "0.1.0"
