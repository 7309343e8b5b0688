"""Fixed values and user-facing texts of the certbot plugin ``elemta``."""

from __future__ import annotations

PLUGIN_NAME = "elemta"

DESCRIPTION = ("elemta SMTP server: installs certificates into elemta's cache and "
               "answers HTTP-01 and TLS-ALPN-01 challenges through elemta")

MORE_INFO = (
    "Installs certificates for the elemta SMTP server and answers HTTP-01 and TLS-ALPN-01 "
    "challenges.\n"
    "Installer: writes key + full chain to <cache_dir>/live/<domain>.pem (atomically) and "
    "sends SIGHUP to the daemon in [server] pid_file, which reloads without dropping "
    "connections.\n"
    "Authenticator: writes the challenge answers to "
    "<cache_dir>/webroot/.well-known/acme-challenge/, which the running daemon serves on "
    "[tls.letsencrypt] http_addr; when no daemon listens there, the plugin serves them "
    "itself for the duration of the challenge. TLS-ALPN-01 (--preferred-challenges "
    "tls-alpn-01, or [tls.letsencrypt] challenge = \"tls-alpn-01\"): the key authorizations "
    "go to <cache_dir>/tls-alpn-01/<name>, answered by the daemon on [tls.letsencrypt] "
    "https_addr, or by the plugin itself while no daemon listens there.\n"
    "Both read elemta.toml from --elemta-config (default: $ELEMTA_CONFIG or "
    "/etc/elemta/elemta.toml)."
)

CONFIG_HELP = ("elemta.toml to read (cache_dir, http_addr, https_addr, challenge, pid_file); "
               "saved in the renewal configuration so 'certbot renew' uses the same file. "
               "Default: $ELEMTA_CONFIG, else /etc/elemta/elemta.toml")

CONNECT_TIMEOUT = 2.0     # is a daemon listening on http_addr?

ENHANCEMENT_REFUSAL = (
    "elemta supports no enhancements, so --{enhancement} cannot be applied: SMTP has "
    "no HTTPS redirect, HSTS or OCSP stapling to configure. The certificate itself is "
    "installed; drop --{enhancement} (or use --no-redirect / --no-hsts) and run again."
)

SAVE_NOTES_TLS_ENABLED = "Turned on [tls] enabled so the certificate is served\n"
SAVE_NOTES_DOMAIN = "Set [tls.letsencrypt] domain = {domain!r}\n"
