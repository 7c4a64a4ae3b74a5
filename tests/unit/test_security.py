"""Encryption-at-rest primitives: master keys, the key chain, wrapped data keys, sealed values
and the blind keyword index. Pure and fast."""

from __future__ import annotations

import base64
import json
import os
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memory_engine.config import EngineConfig
from memory_engine.exceptions import (
    ConfigurationError,
    DataKeyMissingError,
    DecryptionError,
    EncryptionError,
    KeyConfigurationError,
)
from memory_engine.security import (
    STOPWORDS,
    DataKey,
    KeyChain,
    MasterKey,
    ValueCipher,
    blind_text,
    blind_tokens,
    generate_master_key,
    is_encrypted,
    keyword_tokens,
    load_key_chain,
    new_data_key,
    rewrap_data_key,
    unwrap_data_key,
    value_key_id,
    wrap_data_key,
    wrapped_master_id,
)
from memory_engine.security._blind import _stem

KEY_A = generate_master_key()
KEY_B = generate_master_key()
CHAIN_A = KeyChain(MasterKey.parse(KEY_A))
CHAIN_B = KeyChain(MasterKey.parse(KEY_B))


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# --- master keys ------------------------------------------------------------------------------


def test_generated_key_is_44_char_urlsafe_base64_of_32_random_bytes() -> None:
    key = generate_master_key()
    assert len(key) == 44
    assert key.endswith("=")
    assert set(key) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=")
    assert len(base64.urlsafe_b64decode(key)) == 32
    assert generate_master_key() != key


def test_parse_round_trips_with_or_without_padding_and_whitespace() -> None:
    raw = base64.urlsafe_b64decode(KEY_A)
    assert MasterKey.parse(KEY_A).key == raw
    assert MasterKey.parse(KEY_A.rstrip("=")).key == raw
    assert MasterKey.parse(f"  {KEY_A}\n").key == raw
    assert MasterKey.parse(KEY_A.encode()).key == raw
    assert MasterKey.parse(raw).key == raw


@pytest.mark.parametrize("size", [0, 1, 16, 31, 33, 64])
def test_parse_rejects_wrong_lengths_and_says_the_length(size: int) -> None:
    text = base64.urlsafe_b64encode(os.urandom(size)).decode() if size else "   "
    with pytest.raises(KeyConfigurationError) as info:
        MasterKey.parse(text)
    message = str(info.value)
    assert "keygen" in message
    if size:
        assert f"{size} bytes" in message
        assert text.strip() not in message
        assert text.strip().rstrip("=")[:12] not in message


@pytest.mark.parametrize("text", [
    "not a key at all, just some words!!",
    base64.b64encode(b"\xfb" * 32).decode(),  # standard base64: '+' and '/'
    "A" * 43 + "\u00e9",
    "=" + "A" * 43,
])
def test_parse_rejects_non_base64_without_echoing_it(text: str) -> None:
    with pytest.raises(KeyConfigurationError) as info:
        MasterKey.parse(text)
    message = str(info.value)
    assert text not in message
    assert text[:10] not in message
    assert "keygen" in message
    assert info.value.__cause__ is None or text not in str(info.value.__cause__)


def test_parse_rejects_raw_bytes_of_the_wrong_length() -> None:
    secret = b"\xff\xfe" + os.urandom(30)
    with pytest.raises(KeyConfigurationError, match="33 bytes"):
        MasterKey.parse(secret + b"\x00")
    with pytest.raises(KeyConfigurationError):
        MasterKey.parse(secret[:31])


def test_key_configuration_error_is_a_configuration_and_encryption_error() -> None:
    with pytest.raises(ConfigurationError):
        MasterKey.parse("short")
    with pytest.raises(EncryptionError):
        MasterKey.parse("short")


def test_key_id_is_stable_16_hex_and_differs_between_keys() -> None:
    a1, a2, b = MasterKey.parse(KEY_A), MasterKey.parse(KEY_A.rstrip("=")), MasterKey.parse(KEY_B)
    assert a1.key_id == a2.key_id
    assert a1.key_id != b.key_id
    assert len(a1.key_id) == 16
    int(a1.key_id, 16)
    assert a1.key.hex()[:16] != a1.key_id
    assert a1 == a2


def test_master_key_id_given_must_match_the_key() -> None:
    key = MasterKey.parse(KEY_A)
    assert MasterKey(key.key, key.key_id) == key
    with pytest.raises(KeyConfigurationError):
        MasterKey(key.key, MasterKey.parse(KEY_B).key_id)


def test_reprs_hold_no_key_material() -> None:
    master = MasterKey.parse(KEY_A)
    dek = new_data_key()
    chain = KeyChain(master, (MasterKey.parse(KEY_B),))
    secrets_ = [KEY_A, KEY_A.rstrip("="), KEY_B.rstrip("="), master.key.hex(), repr(master.key),
                dek.key.hex(), repr(dek.key), repr(dek.enc_key), repr(dek.blind_key)]
    for obj in (master, dek, chain, ValueCipher(dek)):
        text = repr(obj)
        for secret in secrets_:
            assert secret not in text, (obj, secret)
    assert master.key_id in repr(master)
    assert dek.key_id in repr(dek)


def test_key_chain_by_id_and_ids() -> None:
    a, b = MasterKey.parse(KEY_A), MasterKey.parse(KEY_B)
    chain = KeyChain(a, (b,))
    assert chain.ids == (a.key_id, b.key_id)
    assert chain.by_id(a.key_id) is a
    assert chain.by_id(b.key_id) is b
    with pytest.raises(DataKeyMissingError, match="previous_master_keys") as info:
        CHAIN_A.by_id(b.key_id)
    assert b.key_id in str(info.value)


# --- loading the key chain from the configuration -------------------------------------------


def test_load_key_chain_is_none_when_encryption_is_off() -> None:
    assert load_key_chain(EngineConfig()) is None


def test_load_key_chain_from_master_key() -> None:
    chain = load_key_chain(EngineConfig(master_key=KEY_A))
    assert chain is not None
    assert chain.current == MasterKey.parse(KEY_A)
    assert chain.previous == ()


def test_load_key_chain_names_the_setting_when_the_key_is_bad() -> None:
    with pytest.raises(KeyConfigurationError, match="master_key"):
        load_key_chain(EngineConfig(master_key="too-short"))


def test_load_key_chain_from_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    path.write_text(KEY_A + "\n")
    path.chmod(0o600)
    chain = load_key_chain(EngineConfig(master_key_file=path))
    assert chain is not None
    assert chain.current.key == base64.urlsafe_b64decode(KEY_A)


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_load_key_chain_refuses_a_file_others_can_read(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "master.key"
    path.write_text(KEY_A)
    path.chmod(mode)
    with pytest.raises(KeyConfigurationError, match="chmod 600") as info:
        load_key_chain(EngineConfig(master_key_file=path))
    assert str(path) in str(info.value)
    assert KEY_A.rstrip("=") not in str(info.value)


def test_load_key_chain_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KeyConfigurationError, match="does not exist"):
        load_key_chain(EngineConfig(master_key_file=tmp_path / "absent.key"))


def test_load_key_chain_refuses_a_malformed_file(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    path.write_text("hello")
    path.chmod(0o600)
    with pytest.raises(KeyConfigurationError, match="master_key_file"):
        load_key_chain(EngineConfig(master_key_file=path))


@pytest.mark.parametrize("supplied", [KEY_A, KEY_A.encode(), base64.urlsafe_b64decode(KEY_A)])
def test_load_key_chain_from_a_provider(supplied: str | bytes) -> None:
    calls = []

    def provider() -> str | bytes:
        calls.append(1)
        return supplied

    chain = load_key_chain(EngineConfig(key_provider=provider))
    assert chain is not None
    assert chain.current == MasterKey.parse(KEY_A)
    assert calls == [1]


def test_a_failing_provider_becomes_a_key_configuration_error() -> None:
    boom = RuntimeError("vault unreachable")

    def provider() -> bytes:
        raise boom

    with pytest.raises(KeyConfigurationError, match="key_provider") as info:
        load_key_chain(EngineConfig(key_provider=provider))
    assert info.value.__cause__ is boom


def test_a_provider_returning_something_else_is_refused() -> None:
    with pytest.raises(KeyConfigurationError, match="NoneType"):
        load_key_chain(EngineConfig(key_provider=lambda: None))


def test_load_key_chain_with_previous_keys_drops_the_current_and_duplicates() -> None:
    key_c = generate_master_key()
    config = EngineConfig(master_key=KEY_A,
                          previous_master_keys=(KEY_B, KEY_A, key_c, KEY_B.rstrip("=")))
    chain = load_key_chain(config)
    assert chain is not None
    assert chain.current == MasterKey.parse(KEY_A)
    assert chain.previous == (MasterKey.parse(KEY_B), MasterKey.parse(key_c))


def test_a_bad_previous_key_is_named_by_position() -> None:
    with pytest.raises(KeyConfigurationError, match=r"previous_master_keys\[1\]"):
        load_key_chain(EngineConfig(master_key=KEY_A, previous_master_keys=(KEY_B, "nope")))


# --- wrapped data keys ------------------------------------------------------------------------


def test_new_data_keys_are_random_with_16_hex_ids() -> None:
    a, b = new_data_key(), new_data_key()
    assert a.key_id != b.key_id
    assert a.key != b.key
    assert len(a.key) == 32
    assert len(a.key_id) == 16
    int(a.key_id, 16)


def test_data_key_sub_keys_are_distinct_and_deterministic() -> None:
    dek = new_data_key()
    again = DataKey(dek.key_id, dek.key)
    assert again.enc_key == dek.enc_key
    assert again.blind_key == dek.blind_key
    assert len({dek.key, dek.enc_key, dek.blind_key}) == 3
    assert len(dek.enc_key) == len(dek.blind_key) == 32


def test_data_key_refuses_bad_ids_and_lengths() -> None:
    with pytest.raises(EncryptionError):
        DataKey("XYZ", os.urandom(32))
    with pytest.raises(EncryptionError):
        DataKey("0123456789abcdef", os.urandom(16))


def test_wrap_unwrap_round_trip() -> None:
    dek = new_data_key()
    wrapped = wrap_data_key(CHAIN_A, "user-1", dek)
    doc = json.loads(wrapped)
    assert set(doc) == {"v", "mk", "dk", "n", "ct"}
    assert doc["v"] == 1
    assert doc["mk"] == CHAIN_A.current.key_id == wrapped_master_id(wrapped)
    assert doc["dk"] == dek.key_id
    assert " " not in wrapped
    assert dek.key.hex() not in wrapped
    back = unwrap_data_key(CHAIN_A, "user-1", wrapped)
    assert back == dek
    assert unwrap_data_key(CHAIN_A, "user-1", wrapped.encode()) == dek


def test_wrapping_twice_gives_different_text() -> None:
    dek = new_data_key()
    assert wrap_data_key(CHAIN_A, "u", dek) != wrap_data_key(CHAIN_A, "u", dek)


def test_unwrap_under_another_user_tag_fails() -> None:
    wrapped = wrap_data_key(CHAIN_A, "alice", new_data_key())
    with pytest.raises(DecryptionError, match="mallory") as info:
        unwrap_data_key(CHAIN_A, "mallory", wrapped)
    assert info.value.__cause__ is not None


def test_unwrap_detects_every_flipped_byte_of_nonce_and_ciphertext() -> None:
    dek = new_data_key()
    wrapped = wrap_data_key(CHAIN_A, "u", dek)
    doc = json.loads(wrapped)
    for name in ("n", "ct"):
        raw = _b64d(doc[name])
        for i in range(len(raw)):
            bad = bytearray(raw)
            bad[i] ^= 0x01
            tampered = json.dumps({**doc, name: _b64e(bytes(bad))})
            with pytest.raises(DecryptionError):
                unwrap_data_key(CHAIN_A, "u", tampered)


def test_unwrap_detects_a_changed_data_key_id() -> None:
    doc = json.loads(wrap_data_key(CHAIN_A, "u", new_data_key()))
    with pytest.raises(DecryptionError):
        unwrap_data_key(CHAIN_A, "u", json.dumps({**doc, "dk": new_data_key().key_id}))


@pytest.mark.parametrize("wrapped", [
    "", "not json", "[]", '{"v":2}', '{"v":1,"mk":"x"}', b"\xff\xfe",
])
def test_unwrap_refuses_malformed_input(wrapped: str | bytes) -> None:
    with pytest.raises(DecryptionError):
        unwrap_data_key(CHAIN_A, "u", wrapped)


def test_unwrap_with_an_unknown_master_key_is_data_key_missing() -> None:
    wrapped = wrap_data_key(CHAIN_A, "u", new_data_key())
    with pytest.raises(DataKeyMissingError, match=CHAIN_A.current.key_id):
        unwrap_data_key(CHAIN_B, "u", wrapped)


def test_rewrap_moves_a_data_key_to_the_new_master_key() -> None:
    dek = new_data_key()
    old_wrapped = wrap_data_key(CHAIN_A, "u", dek)
    rotating = KeyChain(MasterKey.parse(KEY_B), (MasterKey.parse(KEY_A),))
    assert unwrap_data_key(rotating, "u", old_wrapped) == dek
    new_wrapped = rewrap_data_key(rotating, "u", old_wrapped)
    assert wrapped_master_id(new_wrapped) == CHAIN_B.current.key_id
    assert unwrap_data_key(CHAIN_B, "u", new_wrapped) == dek
    with pytest.raises(DataKeyMissingError):
        unwrap_data_key(CHAIN_A, "u", new_wrapped)
    with pytest.raises(DataKeyMissingError):
        unwrap_data_key(CHAIN_B, "u", old_wrapped)
    # values sealed before the rotation still open: the data key did not change
    token = ValueCipher(dek).encrypt("kept", "r")
    assert ValueCipher(unwrap_data_key(CHAIN_B, "u", new_wrapped)).decrypt(token, "r") == "kept"


# --- sealed values ----------------------------------------------------------------------------

DEK = new_data_key()
CIPHER = ValueCipher(DEK)


@settings(max_examples=200)
@given(text=st.text(), aad=st.text())
def test_value_round_trip(text: str, aad: str) -> None:
    token = CIPHER.encrypt(text, aad)
    assert token.startswith(f"enc1:{DEK.key_id}:")
    assert is_encrypted(token)
    assert is_encrypted(token.encode())
    assert value_key_id(token) == DEK.key_id
    assert CIPHER.decrypt(token, aad) == text
    assert CIPHER.decrypt(token.encode(), aad) == text
    assert ValueCipher(DataKey(DEK.key_id, DEK.key)).decrypt(token, aad) == text


@given(data=st.binary(), aad=st.text())
def test_bytes_round_trip(data: bytes, aad: str) -> None:
    blob = CIPHER.encrypt_bytes(data, aad)
    assert blob.startswith(b"ME1" + DEK.key_id.encode())
    assert value_key_id(blob) == DEK.key_id
    assert CIPHER.decrypt_bytes(blob, aad) == data


def test_cipher_key_id_is_the_data_key_id() -> None:
    assert CIPHER.key_id == DEK.key_id


def test_every_flipped_byte_of_a_token_is_detected() -> None:
    token = CIPHER.encrypt("the user's secret", "u:m:text")
    prefix, body = token.rsplit(":", 1)
    raw = _b64d(body)
    assert len(raw) == 12 + len("the user's secret") + 16
    for i in range(len(raw)):
        for bit in (0x01, 0x80):
            bad = bytearray(raw)
            bad[i] ^= bit
            with pytest.raises(DecryptionError, match="failed authentication") as info:
                CIPHER.decrypt(f"{prefix}:{_b64e(bytes(bad))}", "u:m:text")
            assert "secret" not in str(info.value)


def test_every_changed_character_of_a_token_is_detected() -> None:
    # 31 sealed bytes: the last base64 character carries 4 unused bits, so only a strict
    # decoder notices when just those change
    token = CIPHER.encrypt("hi!", "r")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for i in range(len("enc1:") + 17, len(token)):
        for c in alphabet:
            if token[i] != c:
                with pytest.raises(DecryptionError):
                    CIPHER.decrypt(token[:i] + c + token[i + 1:], "r")


def test_truncated_and_extended_tokens_are_detected() -> None:
    token = CIPHER.encrypt("hello", "r")
    for bad in (token[:-1], token[:-4], token + "A", token + "AAAA", f"enc1:{DEK.key_id}:"):
        with pytest.raises(DecryptionError):
            CIPHER.decrypt(bad, "r")


def test_every_flipped_byte_of_a_blob_is_detected() -> None:
    blob = CIPHER.encrypt_bytes(b"backup data", "backup:1")
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x01
        with pytest.raises(DecryptionError):
            CIPHER.decrypt_bytes(bytes(bad), "backup:1")


def test_a_value_moved_to_another_record_fails() -> None:
    token = CIPHER.encrypt("moved", "user-1:mem-1:text")
    for other in ("user-1:mem-2:text", "user-1:mem-1:summary", "user-2:mem-1:text", ""):
        with pytest.raises(DecryptionError, match="another record") as info:
            CIPHER.decrypt(token, other)
        assert "moved" not in str(info.value).replace("moved from", "")
    with pytest.raises(DecryptionError):
        CIPHER.decrypt_bytes(CIPHER.encrypt_bytes(b"x", "a"), "b")


def test_a_value_from_another_data_key_fails() -> None:
    other = ValueCipher(new_data_key())
    token = other.encrypt("not yours", "r")
    with pytest.raises(DecryptionError, match=other.key_id):
        CIPHER.decrypt(token, "r")
    # even relabelled with this key's id, it does not authenticate
    relabelled = token.replace(other.key_id, DEK.key_id)
    with pytest.raises(DecryptionError):
        CIPHER.decrypt(relabelled, "r")
    with pytest.raises(DecryptionError):
        CIPHER.decrypt_bytes(other.encrypt_bytes(b"x", "r"), "r")


def test_two_encryptions_of_the_same_text_differ() -> None:
    tokens = {CIPHER.encrypt("same", "r") for _ in range(20)}
    assert len(tokens) == 20
    assert len({CIPHER.encrypt_bytes(b"same", "r") for _ in range(20)}) == 20


@pytest.mark.parametrize("token", [
    "plain text", "enc1:", "enc1:xyz:AAAA", "enc2:0123456789abcdef:AAAA",
    "enc1:0123456789abcdef", b"\xff\xfe", "enc1:0123456789abcdef:!!!!",
])
def test_malformed_tokens_raise_decryption_error(token: str | bytes) -> None:
    with pytest.raises(DecryptionError):
        CIPHER.decrypt(token, "r")


def test_value_key_id_of_malformed_tokens_raises() -> None:
    for token in ("plain", "enc1:short:AAAA", b"ME1short"):
        with pytest.raises(DecryptionError):
            value_key_id(token)


def test_is_encrypted() -> None:
    assert not is_encrypted("plain text")
    assert not is_encrypted(b"plain")
    assert not is_encrypted("ENC1:abc")
    assert is_encrypted("enc1:anything")
    assert is_encrypted(b"enc1:anything")


def test_a_lone_surrogate_is_refused_before_encrypting() -> None:
    with pytest.raises(EncryptionError):
        CIPHER.encrypt("bad \ud800", "r")


# --- blind keyword index ----------------------------------------------------------------------


def test_stopwords_are_redisearch_defaults() -> None:
    assert len(STOPWORDS) == 33
    assert {"a", "the", "with", "into", "such"} <= STOPWORDS
    assert "run" not in STOPWORDS


def test_keyword_tokens_drop_stopwords_stem_lowercase_and_dedupe() -> None:
    assert keyword_tokens("The cat and the HAT") == ["cat", "hat"]
    assert keyword_tokens("running runs Run") == ["run"]
    assert keyword_tokens("jobs") == keyword_tokens("job") == ["job"]
    assert keyword_tokens("Jobs, jobs; JOB!") == ["job"]
    assert keyword_tokens("is it a such that") == []
    assert keyword_tokens("zebra apple zebra") == ["zebra", "appl"]
    assert keyword_tokens("") == []


def test_keyword_tokens_are_unicode_words() -> None:
    assert keyword_tokens("Café MÜNCHEN") == ["café", "münchen"]


@given(st.text())
def test_keyword_tokens_are_unique_lowercase_and_not_stopwords(text: str) -> None:
    tokens = keyword_tokens(text)
    assert len(tokens) == len(set(tokens))
    assert keyword_tokens(f"{text} {text}") == tokens
    for token in tokens:
        assert token
        assert not any(c.isspace() for c in token)


def test_keyword_tokens_are_thread_safe() -> None:
    words = [f"running{i} jumps{i} jobs{i}" for i in range(300)]
    expected = [keyword_tokens(w) for w in words]
    _stem.cache_clear()
    results: list[list[list[str]]] = []

    def work() -> None:
        results.append([keyword_tokens(w) for w in words])

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4
    assert all(r == expected for r in results)


def test_blind_tokens_are_24_hex_deterministic_per_key_and_differ_across_keys() -> None:
    k1, k2 = new_data_key().blind_key, new_data_key().blind_key
    d1 = blind_tokens(k1, ["run", "job"])
    assert blind_tokens(k1, ["run", "job"]) == d1
    assert len(d1) == 2
    assert d1[0] != d1[1]
    for digest in d1:
        assert len(digest) == 24
        assert digest == digest.lower()
        int(digest, 16)
    d2 = blind_tokens(k2, ["run", "job"])
    assert set(d1).isdisjoint(d2)


def test_blind_tokens_dedupe_and_keep_order() -> None:
    key = DEK.blind_key
    a, b = blind_tokens(key, ["a1", "b2"])
    assert blind_tokens(key, ["b2", "a1", "b2", "a1"]) == [b, a]


def test_blind_text_matches_across_word_forms() -> None:
    key = DEK.blind_key
    assert blind_text(key, "Running") == blind_text(key, "runs") == blind_tokens(key, ["run"])
    assert blind_text(key, "the jobs") == blind_text(key, "job")
    assert blind_text(key, "job") != blind_text(key, "run")
    assert blind_text(key, "the a of") == []
    assert "run" not in "".join(blind_text(key, "run"))
