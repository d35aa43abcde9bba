"""Exchange API keys at rest: Fernet tokens under ``MultiFernet(CREDENTIALS_KEYS)``.

The first key encrypts; every key decrypts, so a new key is put first and
the old ones stay until ``rotate`` has re-encrypted every token. Decrypted
values live only in memory and are registered with the log redactor; no
error message ever carries a token or a plaintext.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from services.common.errors import FailedPrecondition
from services.common import metrics
from services.common.jsonlog import register_secret
from services.common.settings import SettingsError

DECRYPT_FAILED_MESSAGE = "credentials could not be decrypted"


def parse_credentials_keys(raw: str) -> tuple[str, ...]:
    keys = tuple(part.strip() for part in raw.split(",") if part.strip())
    if not keys:
        raise SettingsError("environment variable CREDENTIALS_KEYS must hold at least one Fernet key")
    for key in keys:
        register_secret(key)
    return keys


@dataclass(frozen=True)
class ApiCredentials:
    api_key: str
    api_secret: str

    def __repr__(self) -> str:  # dataclass repr would print the secret
        return "ApiCredentials(<redacted>)"


class CredentialVault:
    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("at least one Fernet key is required")
        try:
            self._fernet = MultiFernet([Fernet(key.encode()) for key in keys])
        except (ValueError, TypeError):
            raise ValueError("CREDENTIALS_KEYS holds a value that is not a Fernet key") from None

    @property
    def fernet(self) -> MultiFernet:
        return self._fernet

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            value = self._fernet.decrypt(token.encode()).decode()
        except (InvalidToken, ValueError, TypeError, AttributeError):
            # Usually a lost or mis-rotated CREDENTIALS_KEYS: every bot of every such account stops; alerted.
            metrics.CREDENTIAL_FAILURES_TOTAL.labels(reason="decrypt").inc()
            raise FailedPrecondition(DECRYPT_FAILED_MESSAGE) from None
        register_secret(value)
        return value

    def decrypt_pair(self, api_key_token: str, api_secret_token: str) -> ApiCredentials:
        return ApiCredentials(self.decrypt(api_key_token), self.decrypt(api_secret_token))

    def rotate(self, token: str) -> str:
        try:
            return self._fernet.rotate(token.encode()).decode()
        except (InvalidToken, ValueError, TypeError, AttributeError):
            raise FailedPrecondition(DECRYPT_FAILED_MESSAGE) from None
