import pytest

from memory_engine.exceptions import SchemaMismatchError
from memory_engine.store._schema import check_compatible, describe_info, schema_dict


def _spec(dims: int = 384) -> dict:
    return schema_dict("idx", "p:mem:", dims, m=16, ef_construction=200, ef_runtime=10)


def _info(
    dims: int = 384,
    case_sensitive: bool = True,
    extra: list | None = None,
    created_path: bytes = b"created_at",
    previous: list | None = None,
) -> list:
    tag = [b"CASESENSITIVE"] if case_sensitive else []
    attrs = [
        [b"identifier", name, b"attribute", name, b"type", b"TAG", b"SEPARATOR", b",", *tag]
        for name in (b"user_id", b"session_id", b"kind", b"role")
    ]
    attrs.append(previous if previous is not None else [
        b"identifier", b"previous_id", b"attribute", b"previous_id", b"type", b"TAG",
        b"SEPARATOR", b",", *tag, b"SORTABLE", b"UNF", b"NOINDEX"])
    if not attrs[-1]:
        attrs.pop()
    for name in (b"text", b"name", b"context"):
        attrs.append([b"identifier", name, b"attribute", name, b"type", b"TEXT", b"WEIGHT", b"1"])
    for path, name in ((created_path, b"created"), (b"last_accessed", b"accessed"),
                       (b"access_count", b"access_count"), (b"importance", b"importance")):
        attrs.append([b"identifier", path, b"attribute", name, b"type", b"NUMERIC"])
    attrs.append([
        b"identifier", b"embedding", b"attribute", b"embedding", b"type", b"VECTOR",
        b"algorithm", b"HNSW", b"data_type", b"FLOAT32", b"dim", dims,
        b"distance_metric", b"COSINE", b"M", 16, b"ef_construction", 200,
    ])
    attrs += extra or []
    return [
        b"index_name", b"idx", b"index_options", [],
        b"index_definition",
        [b"key_type", b"HASH", b"prefixes", [b"p:mem:"], b"default_score", b"1"],
        b"attributes", attrs, b"num_docs", b"0",
    ]


def test_matching_index_passes() -> None:
    check_compatible("idx", _info(), _spec())
    assert describe_info(_info())["fields"]["embedding"]["dim"] == "384"


def test_previous_id_is_sortable_unindexed_and_optional() -> None:
    """Hybrid searches return ``previous_id`` for every candidate: a sortable copy in the
    index saves opening each hash. An index made before it existed still opens."""
    (field,) = [f for f in _spec()["fields"] if f["name"] == "previous_id"]
    assert field["attrs"] == {"case_sensitive": True, "sortable": True, "no_index": True}
    check_compatible("idx", _info(previous=[]), _spec())
    wrong = [b"identifier", b"previous_id", b"attribute", b"previous_id", b"type", b"TEXT"]
    with pytest.raises(SchemaMismatchError, match="previous_id"):
        check_compatible("idx", _info(previous=wrong), _spec())


@pytest.mark.parametrize(
    ("info", "needle"),
    [
        (_info(dims=768), "embedding"),
        (_info(case_sensitive=False), "user_id"),
        (_info(created_path=b"created_ts"), "created"),
        (_info(extra=[[b"identifier", b"x", b"attribute", b"x", b"type", b"TAG"]]), "unexpected"),
    ],
)
def test_differences_are_named(info: list, needle: str) -> None:
    with pytest.raises(SchemaMismatchError, match=needle) as err:
        check_compatible("idx", info, _spec())
    assert "nothing was changed or dropped" in str(err.value)
