"""Several MX hosts, one name: the daemon's side of the cluster (``[cluster] redis_url``).

The shared store itself (``cache/store.py``, ``cache/redis_store.py``) is part of the cache
contract, because the certbot plugin writes to it too. Here is what only the daemon does:
calling the store off the reactor thread and saying once when Redis goes away and once when
it returns (``link.py``), hearing of new certificates (``subscriber.py``: pub/sub) and
installing them through the cache's validated write (``sync.py``, with a periodic check as
the fallback), taking the issuance lock around certbot (``issuance.py``), claiming notices
so each is mailed once per cluster (``claims.py``), and the whole put together
(``node.py``).
"""
