"""The DSL console: a Starlette web app over the collector's store.

``create_app(db_path, data_dir, public_url=..., allowed_hosts=[...])`` builds it over the
SQLite store at ``db_path`` (or ``create_app(store=..., data_dir=...)`` over any store with
the console repositories, e.g. a PostgresStore); the collector's ``serve`` runs it with
uvicorn. The console is an adapter: its views call collector/services/ and hold no SQL.
``collector.console.cli.register`` adds the user / roster / device / report sub-commands.
"""

from .app import create_app

__all__ = ["create_app"]
