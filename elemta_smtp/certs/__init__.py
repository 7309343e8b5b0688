"""Certificate facts: a combined PEM parsed, validated, and the names it covers. Pure."""
