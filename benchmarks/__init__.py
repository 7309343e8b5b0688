"""elemta's SMTP benchmark: elemta against aiosmtpd and stock Twisted ESMTP,
measured in the same run (``python -m benchmarks.run --help``)."""
