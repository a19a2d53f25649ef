"""The DSL console: a Starlette web app over the collector's store.

``create_app(db_path, data_dir, public_url=..., allowed_hosts=[...])`` builds it; the
collector's ``serve`` runs it with uvicorn. ``collector.console.cli.register`` adds the
user / roster / device / report sub-commands.
"""

from .app import create_app

__all__ = ["create_app"]
