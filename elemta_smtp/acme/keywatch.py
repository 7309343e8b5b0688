"""The key-type step of a renewal: ``[tls.letsencrypt] key_type`` changed since the served
certificate was issued. Without DANE the next renewal makes a new key of the configured
type (said once); with DANE the key changes only through a staged rollover, so a notice
asks for one (once per key) and renewals keep the key until then. The RSA certificate of
key_type = "ecdsa+rsa" is, with DANE, obtained by a rollover too (its key must be
published before it is served)."""

from __future__ import annotations

from datetime import datetime

from twisted.logger import Logger

from elemta_smtp.acme.notifier import Notifier
from elemta_smtp.acme.renewal import CertFacts
from elemta_smtp.acme.runner import key_change_args
from elemta_smtp.acme.slots import KEY_WORDS, Slot
from elemta_smtp.cache.state import Event
from elemta_smtp.config import Config

log = Logger(namespace="elemta.acme")


class KeyStep:
    def __init__(self, config: Config, slot: Slot, notifier: Notifier) -> None:
        self._config = config
        self._slot = slot
        self._notifier = notifier
        self._logged: set[str] = set()

    def args(self, current: CertFacts, now: datetime) -> list[str]:
        """The renewal's key options for ``current``: a new key of the configured type when
        the served one differs (said once), none with DANE (a notice asks for a rollover)."""
        served, wanted = current.key_type, self._slot.key_type
        dane = self._config.tls.dane.enabled
        args = key_change_args(wanted, served, dane)
        if not served or served == wanted or current.serial in self._logged:
            return args
        self._logged.add(current.serial)
        domain, what = self._slot.domain, self._slot.what
        served_word, wanted_word = KEY_WORDS.get(served, served), KEY_WORDS[wanted]
        if not dane:
            log.info("the {what} for {domain} (serial {serial}) has an {served} key but "
                     "[tls.letsencrypt] key_type asks for {wanted}: its next renewal makes a new "
                     "{wanted} key (certbot --key-type {kind} --new-key)", what=what,
                     domain=domain, serial=current.serial, served=served_word,
                     wanted=wanted_word, kind=wanted)
            return args
        sentence = (f"The {what} served for {domain} (serial {current.serial}) has an "
                    f"{served_word} key but [tls.letsencrypt] key_type asks for {wanted_word}; "
                    "with [tls.dane] enabled the key changes only through a staged rollover, so "
                    "renewals keep the current key until then")
        log.warn("{sentence}: run `elemta dane rollover start`", sentence=sentence)
        self._notifier.add_once(Event(
            id=f"key-type-change:{current.tlsa.split()[-1] if current.tlsa else current.serial}"
               f":{wanted}",
            kind="key-type-change", at=now, names=current.names, serial=current.serial,
            reason=sentence + "."))
        return args

    def rollover_first(self, now: datetime) -> bool:
        """True when this certificate is not to be obtained by the daemon: the RSA one of
        key_type = "ecdsa+rsa" with DANE enabled (said once, with a notice)."""
        slot = self._slot
        if not (slot.is_companion and self._config.tls.dane.enabled):
            return False
        le = self._config.tls.letsencrypt
        reason = (f"[tls.letsencrypt] key_type = \"{le.key_type}\" asks for an "
                  f"{KEY_WORDS[slot.key_type]} certificate for {slot.domain} next to the one "
                  "served, and with [tls.dane] enabled its key must be published in DNS before "
                  "it is served.")
        if self._notifier.add_once(Event(id=f"key-type-change:{slot.key}:first",
                                         kind="key-type-change", at=now, names=le.names,
                                         reason=reason)):
            log.warn("the {what} for {domain} is not obtained by the daemon while [tls.dane] is "
                     "enabled: its key must be published first; run `elemta dane rollover start`",
                     what=slot.what, domain=slot.domain)
        return True
