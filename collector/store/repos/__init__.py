"""The store's repositories, one module per aggregate, each written once in portable SQL over
:class:`collector.store.sql.Db` and mixed into every backend (``SqliteStore``, ``PostgresStore``).

Core (gRPC ingest, enrolment, fan-out, alerts, retention): devices, captures (queue items,
exemptions, alerts), rules, audit, retention. Console (DSL work): console.ConsoleRepos.
Each mixin needs ``self.db`` (a Db) and nothing else from its host class.
"""
