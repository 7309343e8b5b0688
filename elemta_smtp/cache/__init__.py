"""The certificate cache directory: THE contract between the daemon (``elemta_smtp``)
and the certbot plugin (``certbot_elemta``). Every rule about what lies where, with which
mode, and how it is written, is here and nowhere else::

    <cache_dir>/                                  0700
      live/<name>.pem                             key + leaf + chain, 0600, atomic   (live.py)
      webroot/.well-known/acme-challenge/<token>  HTTP-01 answers, 0644 in 0755      (challenges.py)
      tls-alpn-01/<name>                          TLS-ALPN-01 key authorizations, 0644 in 0755
                                                  (challenges.py; the certificate: tlsalpn.py)
      certbot/{config,work,logs}/                 certbot's folders when elemta runs it
      certbot/lineages/<name>.json                which lineage live/<name>.pem came from
                                                                                     (lineages.py)
      state.json                                  notice/renewal state, atomic       (state.py)
      bootstrap.pem                               the self-signed fallback, 0600     (live.py)

Paths and folder modes: layout.py. The one atomic writer: atomic.py.
"""
