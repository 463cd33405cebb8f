"""Where API keys come from, and how they are kept out of everything that is written down.

Owns: ``resolve_api_key`` (an environment variable the user names, then the system keyring),
``store_in_keyring`` / ``delete_from_keyring`` (service name ``SERVICE``), ``keyring_available``
(a yes/no with a sentence for the user) and ``redact`` (masks secrets in text for logs and error
messages). Qt-free; the ``keyring`` library is imported lazily, only when the keyring is used.

Thread: whichever thread asks. The connection panel calls it on the GUI thread ("Test
connection", saving a key); a remote run resolves its key on the model worker before it starts.
A keyring call can block while the system shows an unlock prompt, so callers that can do it off
the GUI thread should.

Rule: a resolved key lives only in memory and in the ``Authorization`` header of a request. It is
never written to ``settings.json`` (``AppSettings`` has no field for it), a log, an export or the
run store; every message that might quote it goes through ``redact`` first.
"""

from __future__ import annotations

import logging
import os
from urllib.parse import quote, quote_plus

__all__ = [
    "SERVICE",
    "MASK",
    "KeyringUnavailableError",
    "resolve_api_key",
    "store_in_keyring",
    "delete_from_keyring",
    "keyring_available",
    "redact",
]

#: The keyring service name every Samplescope entry is stored under.
SERVICE = "samplescope"
#: What ``redact`` puts in place of a secret.
MASK = "\u2022\u2022\u2022\u2022"

_log = logging.getLogger(__name__)

_NO_LIBRARY = (
    "The keyring library is not installed, so keys cannot be kept in the system keyring. "
    "Put the key in an environment variable and enter that variable's name instead."
)
_NO_BACKEND = (
    "No system keyring was found on this computer (on Linux it needs a Secret Service such as "
    "GNOME Keyring or KWallet, running in a desktop session). Put the key in an environment "
    "variable and enter that variable's name instead."
)
_NULL_BACKEND = (
    "The system keyring is switched off for Python (keyring's 'null' backend is selected, by "
    "PYTHON_KEYRING_BACKEND or keyringrc.cfg). Put the key in an environment variable instead."
)


class KeyringUnavailableError(Exception):
    """The system keyring cannot store or delete a key. The message says why and what to do;
    it never contains the key."""


# -- keyring access ---------------------------------------------------------------------------


def _backend():
    """The active keyring backend, or raise ``KeyringUnavailableError`` with the reason."""
    ok, reason = keyring_available()
    if not ok:
        raise KeyringUnavailableError(reason)
    import keyring

    return keyring.get_keyring()


def keyring_available() -> tuple[bool, str]:
    """Whether keys can be kept in the system keyring: ``(True, "Keys are kept in <backend>.")``
    or ``(False, reason)``. Never raises: a machine without a keyring service (a headless box
    where keyring falls back to its "fail" backend), a switched-off keyring or a missing library
    each give a sentence the connection panel can show as it is."""
    try:
        import keyring
        from keyring.backends import chainer, fail, null
    except ImportError:
        return False, _NO_LIBRARY
    try:
        kr = keyring.get_keyring()
    except Exception as exc:  # a broken keyringrc.cfg or backend plugin
        return False, f"The system keyring could not be opened ({type(exc).__name__}: {exc}). " \
            "Put the key in an environment variable instead."
    if isinstance(kr, fail.Keyring):
        return False, _NO_BACKEND
    if isinstance(kr, null.Keyring):
        return False, _NULL_BACKEND
    if isinstance(kr, chainer.ChainerBackend):
        try:
            chained = list(kr.backends)
        except Exception:
            chained = []
        if not chained:
            return False, _NO_BACKEND
    name = getattr(kr, "name", "") or type(kr).__name__
    return True, f"Keys are kept in the system keyring ({name})."


def resolve_api_key(env_var: str | None, keyring_entry: str | None) -> str | None:
    """The API key to use, or ``None`` when there is none (a server that needs no key).

    First the environment variable named ``env_var`` (when it is set and not blank), then the
    keyring entry ``keyring_entry`` under service ``SERVICE``. Surrounding whitespace (a pasted
    newline) is dropped. Never raises for a keyring problem: a missing or locked keyring counts as
    "no key there" and is logged without the key; ``keyring_available`` says why.
    """
    if env_var:
        value = os.environ.get(env_var.strip())
        if value is not None and value.strip():
            return value.strip()
    if keyring_entry and keyring_entry.strip():
        ok, reason = keyring_available()
        if not ok:
            _log.info("API key entry %r not read from the keyring: %s", keyring_entry, reason)
            return None
        try:
            import keyring

            value = keyring.get_password(SERVICE, keyring_entry.strip())
        except Exception as exc:  # locked, dismissed unlock prompt, D-Bus error, ...
            _log.warning("Could not read %r from the system keyring (%s).", keyring_entry, type(exc).__name__)
            return None
        if value is not None and value.strip():
            return value.strip()
    return None


def store_in_keyring(entry: str, key: str) -> None:
    """Keep ``key`` in the system keyring as ``entry`` (service ``SERVICE``), replacing an older
    value. ``ValueError`` for an empty entry name or key; ``KeyringUnavailableError`` (without the
    key in its message) when there is no usable keyring or it refuses the write."""
    entry = (entry or "").strip()
    key = (key or "").strip()
    if not entry:
        raise ValueError("The keyring entry needs a name.")
    if not key:
        raise ValueError("The API key is empty.")
    kr = _backend()
    try:
        kr.set_password(SERVICE, entry, key)
    except Exception as exc:
        raise KeyringUnavailableError(
            f"The system keyring did not store the key ({type(exc).__name__}: {redact(str(exc), key)}). "
            "Unlock the keyring and try again, or use an environment variable."
        ) from None


def delete_from_keyring(entry: str) -> bool:
    """Remove ``entry`` from the system keyring: ``True`` if it was there, ``False`` if there was
    no such entry. ``KeyringUnavailableError`` when there is no usable keyring or it refuses."""
    entry = (entry or "").strip()
    if not entry:
        raise ValueError("The keyring entry needs a name.")
    kr = _backend()
    from keyring.errors import PasswordDeleteError

    try:
        kr.delete_password(SERVICE, entry)
    except PasswordDeleteError:
        return False
    except Exception as exc:
        raise KeyringUnavailableError(
            f"The system keyring did not delete the entry {entry!r} ({type(exc).__name__}). "
            "Unlock the keyring and try again."
        ) from None
    return True


# -- redaction --------------------------------------------------------------------------------


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with every occurrence of each secret replaced by ``MASK`` ("••••").

    Empty and ``None`` secrets are ignored, so ``redact(msg, maybe_key)`` is always safe. A
    secret is also masked in its URL-encoded forms (a key that ended up in a query string), and
    longer secrets are replaced first so one secret inside another leaves nothing behind.
    """
    if not text:
        return text
    forms: set[str] = set()
    for secret in secrets:
        if not secret:
            continue
        s = str(secret)
        for form in (s, s.strip(), quote(s, safe=""), quote_plus(s, safe="")):
            if form:
                forms.add(form)
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, MASK)
    return text
