"""The index schema, declared as data, and the check that an existing index matches it."""

from __future__ import annotations

from typing import Any

from redisvl.schema import IndexSchema

from ..exceptions import SchemaMismatchError

SCHEMA_VERSION = 2
# Fields an existing index may lack: searches work without them, only slower. Adding one
# (``FT.ALTER <index> SCHEMA ADD previous_id TAG CASESENSITIVE SORTABLE NOINDEX``) indexes the
# documents already stored too.
OPTIONAL_FIELDS = frozenset({"previous_id"})
_FLAGS = {
    "SORTABLE", "UNF", "NOSTEM", "NOINDEX", "CASESENSITIVE", "WITHSUFFIXTRIE",
    "INDEXEMPTY", "INDEXMISSING", "PHONETIC",
}


def schema_dict(
    index_name: str, prefix: str, dims: int, *, m: int, ef_construction: int, ef_runtime: int,
    encrypted: bool = False,
) -> dict[str, Any]:
    """The redisvl schema of the memory index. With encryption on, no text is indexed:
    the keyword half searches ``kw``, a TAG field of keyed digests of the stemmed words
    (the blind index), and ``text``/``name`` hold ciphertext that is not indexed."""
    tag = {"case_sensitive": True}
    words: list[dict[str, Any]] = [
        {"name": "text", "type": "text"},
        # The speaker and the turn before this one: questions name people, and a reply
        # ("Wow, that's great!") is found by what it answers. (No field weight: the
        # classic BM25 scorer ignores weights.)
        {"name": "name", "type": "text"},
        {"name": "context", "type": "text"},
    ]
    if encrypted:
        words = [{"name": "kw", "type": "tag", "attrs": {"case_sensitive": True,
                                                          "separator": ","}}]
    return {
        "index": {"name": index_name, "prefix": prefix, "storage_type": "hash"},
        "fields": [
            {"name": "user_id", "type": "tag", "attrs": tag},
            {"name": "session_id", "type": "tag", "attrs": tag},
            {"name": "kind", "type": "tag", "attrs": tag},
            {"name": "role", "type": "tag", "attrs": tag},
            # Never searched, but read for every candidate of a hybrid search (context
            # credit): SORTABLE keeps a copy in the index, so FT.SEARCH returns it without
            # opening the candidate's hash (measured: 15 against 48 us of Redis time for 20
            # candidates); NOINDEX builds no inverted index for it. Optional: an index made
            # before it was added (see OPTIONAL_FIELDS) reads it from the hashes instead.
            {"name": "previous_id", "type": "tag",
             "attrs": {**tag, "sortable": True, "no_index": True}},
            *words,
            # Timestamps are indexed under an alias: FT.SEARCH returns an indexed NUMERIC
            # attribute rounded to 12 digits (10 ms today), but a hash field by its own name
            # exactly. Filters use the alias, hits read the field.
            {"name": "created", "path": "created_at", "type": "numeric"},
            {"name": "accessed", "path": "last_accessed", "type": "numeric"},
            {"name": "access_count", "type": "numeric"},
            {"name": "importance", "type": "numeric"},
            {
                "name": "embedding",
                "type": "vector",
                "attrs": {
                    "dims": dims,
                    "algorithm": "hnsw",
                    "distance_metric": "cosine",
                    "datatype": "float32",
                    "m": m,
                    "ef_construction": ef_construction,
                    "ef_runtime": ef_runtime,
                },
            },
        ],
    }


def build_schema(spec: dict[str, Any]) -> IndexSchema:
    """The redisvl schema, with hash-field aliases kept.

    redisvl drops ``path`` for HASH storage, but FT.CREATE supports ``<field> AS <alias>``
    on hashes too, so the paths are put back.
    """
    plain = [{k: v for k, v in f.items() if k != "path"} for f in spec["fields"]]
    schema = IndexSchema.from_dict({**spec, "fields": plain})
    for field in spec["fields"]:
        if "path" in field:
            schema.fields[field["name"]].path = field["path"]
    return schema


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pairs(flat: list[Any]) -> dict[str, Any]:
    """``[k1, v1, k2, v2, ...]`` (with bare flags) as a dict; flags map to True."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(flat):
        key = _s(flat[i])
        if key.upper() in _FLAGS:
            out[key.upper()] = True
            i += 1
            continue
        out[key.lower()] = flat[i + 1] if i + 1 < len(flat) else None
        i += 2
    return out


def describe_info(info: list[Any]) -> dict[str, Any]:
    """The parts of an ``FT.INFO`` reply (RESP2) that decide compatibility."""
    top = _pairs(info)
    definition = _pairs(top.get("index_definition", []))
    fields: dict[str, dict[str, str]] = {}
    for attr in top.get("attributes", []):
        parsed = _pairs(attr)
        desc = {"type": _s(parsed.get("type", "")).upper(), "path": _s(parsed.get("identifier"))}
        if desc["type"] == "TAG":
            desc["case_sensitive"] = str(bool(parsed.get("CASESENSITIVE")))
        if desc["type"] == "VECTOR":
            for key in ("algorithm", "data_type", "dim", "distance_metric"):
                desc[key] = _s(parsed.get(key, "")).upper()
        fields[_s(parsed.get("attribute"))] = desc
    return {
        "key_type": _s(definition.get("key_type", "")).upper(),
        "prefixes": sorted(_s(p) for p in definition.get("prefixes", [])),
        "fields": fields,
    }


def expected_description(spec: dict[str, Any]) -> dict[str, Any]:
    """What ``describe_info`` returns for an index created from ``spec``."""
    fields: dict[str, dict[str, str]] = {}
    for field in spec["fields"]:
        kind = field["type"].upper()
        desc = {"type": kind, "path": field.get("path", field["name"])}
        attrs = field.get("attrs", {})
        if kind == "TAG":
            desc["case_sensitive"] = str(bool(attrs.get("case_sensitive")))
        if kind == "VECTOR":
            desc.update(
                algorithm=attrs["algorithm"].upper(),
                data_type=attrs["datatype"].upper(),
                dim=str(attrs["dims"]),
                distance_metric=attrs["distance_metric"].upper(),
            )
        fields[field["name"]] = desc
    return {
        "key_type": spec["index"]["storage_type"].upper(),
        "prefixes": [spec["index"]["prefix"]],
        "fields": fields,
    }


def check_compatible(index_name: str, info: list[Any], spec: dict[str, Any]) -> None:
    """Raise ``SchemaMismatchError`` naming every difference between index and schema."""
    have, want = describe_info(info), expected_description(spec)
    problems = [
        f"{key}: index has {have[key]!r}, config expects {want[key]!r}"
        for key in ("key_type", "prefixes")
        if have[key] != want[key]
    ]
    for name, desc in want["fields"].items():
        if name not in have["fields"]:
            if name not in OPTIONAL_FIELDS:
                problems.append(f"field {name!r} is missing from the index")
        elif have["fields"][name] != desc:
            problems.append(f"field {name!r}: index has {have['fields'][name]}, expected {desc}")
    problems += [f"unexpected field {n!r}" for n in have["fields"] if n not in want["fields"]]
    if problems:
        raise SchemaMismatchError(
            f"The index {index_name!r} exists with a different schema; nothing was changed or "
            "dropped. Use another index name, or migrate the data. Differences: "
            + "; ".join(problems)
        )
