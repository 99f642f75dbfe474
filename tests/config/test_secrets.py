"""Secrets: encrypted at rest with the Fernet key, redacted everywhere else."""

from __future__ import annotations

import logging

import pytest
from pydantic import SecretStr

from config.secrets import (
    MASK,
    RedactingFilter,
    SecretBox,
    redact,
    redact_mapping,
    register_secret,
    secret_hash,
)


def test_box_round_trip_and_opaque(secret_key: str) -> None:
    box = SecretBox(SecretStr(secret_key))
    token = box.encrypt("LIC-ABCD-1234-EFGH")
    assert "LIC-ABCD" not in token
    assert box.decrypt(token) == "LIC-ABCD-1234-EFGH"


def test_wrong_key_is_a_clear_error(secret_key: str) -> None:
    from cryptography.fernet import Fernet

    token = SecretBox(secret_key).encrypt("x" * 10)
    with pytest.raises(ValueError, match="cannot be decrypted"):
        SecretBox(Fernet.generate_key().decode()).decrypt(token)


def test_secret_given_to_a_logger_comes_out_redacted(caplog: pytest.LogCaptureFixture) -> None:
    register_secret("Sup3rS3cretPassw0rd")
    logger = logging.getLogger("crmcluster.test.redaction")
    logger.addFilter(RedactingFilter())
    with caplog.at_level(logging.INFO, logger="crmcluster.test.redaction"):
        logger.info("connecting with %s", "Sup3rS3cretPassw0rd")
        logger.info("installer args: license_key=ZZZZ-9999 password='hunter22' Authorization: Bearer abc.def")
    text = caplog.text
    assert "Sup3rS3cretPassw0rd" not in text
    assert "ZZZZ-9999" not in text and "hunter22" not in text and "abc.def" not in text
    assert text.count(MASK) >= 4


def test_redact_mapping_masks_secret_keys_and_known_values() -> None:
    register_secret("known-value-123")
    data = {
        "license_key": "AAAA-BBBB",
        "database": {"server": "sql1", "user": "crm", "password": "pw"},
        "note": "used known-value-123 today",
        "items": [{"token": "t"}, "plain"],
        "empty_password": None,
    }
    out = redact_mapping(data)
    assert out["license_key"] == MASK
    assert out["database"] == {"server": "sql1", "user": "crm", "password": MASK}
    assert out["note"] == f"used {MASK} today"
    assert out["items"] == [{"token": MASK}, "plain"]
    assert out["empty_password"] is None
    assert data["license_key"] == "AAAA-BBBB"  # a copy


def test_secret_hash_is_stable_and_not_reversible() -> None:
    assert secret_hash("abc12345") == secret_hash("abc12345")
    assert "abc12345" not in secret_hash("abc12345")
    assert redact("nothing secret here") == "nothing secret here"
