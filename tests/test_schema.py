"""The migrations build exactly the declared schema, from a blank database and from the
first release, on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import create_engine, inspect

from core.migrations import MIGRATIONS, m001_initial, migrate
from core.schema import metadata


def described(engine) -> dict:
    """Tables as the database reports them: columns (nullability) and index names."""
    found = inspect(engine)
    return {table: {"columns": {c["name"]: c["nullable"] for c in found.get_columns(table)},
                    "indexes": {i["name"] for i in found.get_indexes(table)}}
            for table in metadata.tables}


def declared() -> dict:
    return {table.name: {"columns": {c.name: bool(c.nullable) and not c.primary_key
                                     for c in table.columns},
                         "indexes": {i.name for i in table.indexes}}
            for table in metadata.tables.values()}


def test_a_blank_database_migrates_to_the_declared_schema(db_url):
    engine = create_engine(db_url)
    try:
        migrate(engine, metadata)
        assert described(engine) == declared()
    finally:
        engine.dispose()


def test_a_first_release_database_migrates_to_the_declared_schema(db_url):
    engine = create_engine(db_url)
    try:
        migrate(engine, metadata, steps=[m001_initial])
        assert migrate(engine, metadata) == [m.__name__ for m in MIGRATIONS[1:]]
        assert described(engine) == declared()
    finally:
        engine.dispose()
