"""The certbot plugin ``elemta``: installer and HTTP-01 authenticator for elemta."""
